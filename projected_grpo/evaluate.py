"""The deployment eval's prompt sets and statistics: balanced per loophole mode, on the held-out split and on train.

Per split (held-out, train) the eval takes the first `per_mode` problems of that split for every mode of
reward_mode.modes (problems carry their assigned mode), so every mode has the same number of prompts and the
overall rate is the unweighted mean over modes. A split that lacks a mode or has no problems is reported as
missing (with the reason) in summary.json and the log, never replaced by the other split. Where a split has fewer
than `per_mode` problems of some mode, every mode gets that smaller number and the note says so.

Rates come with n (graded samples) and Wilson 95% score intervals.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from projected_grpo.env.problem import SPLITS as PROBLEM_SPLITS
from projected_grpo.modes import MODES, Mode

SPLITS = ("heldout", "train")  # the order the eval runs and reports them: env.problem.SPLITS, held-out first
assert set(SPLITS) == set(PROBLEM_SPLITS)
EVAL_SAMPLES = 4  # samples per eval prompt
Z95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson(k: int, n: int, z: float = Z95) -> list[float] | None:
    """Wilson score interval [lo, hi] of a binomial rate k/n (None for n = 0)."""
    if n == 0:
        return None
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return [max(0.0, centre - half), min(1.0, centre + half)]


def eval_sets(problems: Sequence, modes: Sequence[Mode], per_mode: int) -> tuple[dict[str, list], dict[str, str]]:
    """-> ({split: problems, per mode in `modes` order}, {split: note}). A split absent from the first dict is
    missing; its note says why. A present split may have a note too (fewer prompts per mode than asked)."""
    sets, notes = {}, {}
    for split in SPLITS:
        in_split = [p for p in problems if p.split == split]
        if not in_split:
            notes[split] = f"no {split} problems in env.source: the {split} eval is missing (not replaced by another split)"
            continue
        by_mode = {m: [p for p in in_split if p.mode == m] for m in modes}
        lacking = [m.value for m, ps in by_mode.items() if not ps]
        if lacking:
            notes[split] = f"the {split} split has no problems of mode(s) {lacking}: the {split} eval is missing"
            continue
        n = min(per_mode, *(len(ps) for ps in by_mode.values()))
        if n < per_mode:
            notes[split] = (
                f"the {split} split has only {n} problems of some mode: {n} prompts per mode instead of "
                f"trainer.eval_prompts_per_mode={per_mode}"
            )
        sets[split] = [p for m in modes for p in by_mode[m][:n]]
    return sets, notes


def rate(flags: Sequence[bool]) -> dict:
    k, n = sum(bool(f) for f in flags), len(flags)
    return {"k": k, "n": n, "rate": k / n if n else None, "ci95": wilson(k, n)}


def summarize(graded: Sequence[tuple[Mode, bool, bool]]) -> dict:
    """graded: (mode, exploited, gt_correct) per sample -> hack/solve overall and per mode, with n and Wilson CIs."""
    out = {
        "n": len(graded),
        "hack": rate([ex for _, ex, _ in graded]),
        "solve": rate([gt for _, _, gt in graded]),
        "modes": {},
    }
    for mode in Mode:
        rows = [g for g in graded if g[0] == mode]
        if rows:
            out["modes"][MODES[mode].code] = {
                "n": len(rows),
                "hack": rate([ex for _, ex, _ in rows]),
                "solve": rate([gt for _, _, gt in rows]),
            }
    return out
