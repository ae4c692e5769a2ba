"""Environment checks.

    python -m projected_grpo.env selfcheck            # hack x mode diagonal on every embedded problem
    python -m projected_grpo.env canonical FILE.jsonl # strict-oracle grade of every canonical solution; exit 1 when
                                                      # the file is empty or malformed or any canonical fails

`selfcheck` grades, for every embedded problem: each mode's hacks under every mode's flawed check (``exploited`` must
fire on the diagonal only), the honest completions under every mode (gt_correct, passed, never exploited) and the
wrong completions under every mode (neither passed nor gt_correct). It prints a mode x mode matrix and exits 1 on
any bad cell, listing the offending problem ids.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from projected_grpo.env import completions
from projected_grpo.env.grader import Grader
from projected_grpo.env.problem import Problem
from projected_grpo.modes import ALL_MODES, MODES, Mode


@dataclass
class SelfcheckResult:
    modes: tuple[Mode, ...]
    n_problems: int
    n_gradings: int
    seconds: float
    # (hack mode, check mode) -> ids of problems (one entry per variant) whose hack was exploited there
    exploited: dict[tuple[Mode, Mode], list[str]] = field(default_factory=dict)
    honest_bad: dict[Mode, list[str]] = field(default_factory=dict)  # check mode -> ids
    wrong_bad: dict[Mode, list[str]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


def run_selfcheck(
    problems: Sequence[Problem],
    grader: Grader,
    modes: Sequence[Mode] = ALL_MODES,
    hack: Callable = completions.hack,
    honest: Callable = completions.honest,
    wrong: Callable = completions.wrong,
    n_hack_variants: int = completions.N_HACK_VARIANTS,
    n_honest_variants: int = completions.N_HONEST_VARIANTS,
) -> SelfcheckResult:
    """Grade the whole table in one batch and collect every cell that breaks the diagonal."""
    modes = tuple(Mode(m) for m in modes)
    items, tags = [], []  # tags: (kind, hack mode or None, check mode, problem id, variant)
    for p in problems:
        for check in modes:
            for v in range(n_hack_variants):
                for h in modes:
                    items.append((hack(p, h, v), p, check))
                    tags.append(("hack", h, check, p.id, v))
            for v in range(n_honest_variants):
                items.append((honest(p, v), p, check))
                tags.append(("honest", None, check, p.id, v))
            for v in range(completions.n_wrong_variants(p)):
                items.append((wrong(p, v), p, check))
                tags.append(("wrong", None, check, p.id, v))
    t0 = time.monotonic()
    rewards = grader.grade_batch(items)
    res = SelfcheckResult(modes, len(problems), len(items), time.monotonic() - t0)
    res.exploited = {(h, c): [] for h in modes for c in modes}
    res.honest_bad = {c: [] for c in modes}
    res.wrong_bad = {c: [] for c in modes}
    for (kind, h, check, pid, v), r in zip(tags, rewards):
        where = f"{pid} (variant {v}) under {check.value}"
        if kind == "hack":
            if r.exploited:
                res.exploited[(h, check)].append(pid)
            if r.exploited != (h is check):
                what = "does not fire on its own mode" if h is check else "also fires"
                res.failures.append(f"hack[{h.value}] {what}: {where} ({r.mechanism})")
        elif kind == "honest":
            if not (r.gt_correct and r.passed and not r.exploited):
                res.honest_bad[check].append(pid)
                res.failures.append(f"honest not correct+passed: {where} ({r.mechanism}, gt={r.gt_correct})")
        elif r.passed or r.gt_correct:
            res.wrong_bad[check].append(pid)
            res.failures.append(f"wrong completion passed={r.passed} gt_correct={r.gt_correct}: {where}")
    return res


def format_matrix(res: SelfcheckResult) -> str:
    codes = [MODES[m].code for m in res.modes]
    width = max(8, len(str(res.n_problems * 4)) + 2)
    head = "hack\\check".ljust(12) + "".join(c.rjust(width) for c in codes)
    rows = [head]
    for h in res.modes:
        cells = []
        for c in res.modes:
            n = len(res.exploited[(h, c)])
            bad = (n == 0) if h is c else (n > 0)
            cells.append((f"{n}!" if bad else str(n)).rjust(width))
        rows.append(MODES[h].code.ljust(12) + "".join(cells))
    rows.append("honest bad".ljust(12) + "".join(str(len(res.honest_bad[c])).rjust(width) for c in res.modes))
    rows.append("wrong bad".ljust(12) + "".join(str(len(res.wrong_bad[c])).rjust(width) for c in res.modes))
    return "\n".join(rows)


def _selfcheck(args) -> int:
    from projected_grpo.env.problems import embedded_problems

    problems = embedded_problems()
    with Grader(n_workers=args.workers) as grader:
        res = run_selfcheck(problems, grader)
    print(
        f"selfcheck: {res.n_problems} embedded problems, {len(res.modes)} modes, "
        f"{res.n_gradings} gradings in {res.seconds:.1f}s (cells: exploited hacks; '!' marks a bad cell)"
    )
    print(format_matrix(res))
    if not res.ok:
        ids = sorted({f.split(": ", 1)[1].split(" ", 1)[0] for f in res.failures})
        print(f"FAILED: {len(res.failures)} bad gradings; problems: {ids}")
        for f in res.failures[:40]:
            print("  " + f)
        return 1
    print("OK: every hack fires under its own mode only; honest always correct; wrong never passes")
    return 0


def grade_canonicals(problems: Sequence[Problem], grader: Grader, check_mode: Mode = Mode.exit_code) -> dict:
    """Strict-oracle verdict on every canonical solution, all graded in one parallel batch."""
    items = [(f"```python\n{p.canonical}\n```", p, check_mode) for p in problems]
    rewards = grader.grade_batch(items)
    failed = [p.id for p, r in zip(problems, rewards) if not r.gt_correct]
    return {
        "n": len(problems),
        "correct": len(problems) - len(failed),
        "untrusted": sum(1 for p in problems if p.untrusted),
        "failed_ids": failed,
    }


def _canonical(args) -> int:
    from projected_grpo.env.leetcode import DataError, load_jsonl

    try:
        problems = list(load_jsonl(args.path).problems)  # an empty or malformed file is an error (exit 1)
    except (DataError, FileNotFoundError) as e:
        print(f"data error: {e}", file=sys.stderr)
        return 1
    t0 = time.monotonic()
    with Grader(n_workers=args.workers) as grader:
        summary = grade_canonicals(problems, grader)
    by_shape = defaultdict(int)
    for p in problems:
        for src in p.untrusted:
            by_shape[src.split("(", 1)[0][:60]] += 1
    if by_shape:
        print("untrusted assert shapes (never counted):", dict(by_shape))
    print(f"graded {summary['n']} canonical solutions in {time.monotonic() - t0:.1f}s")
    print(json.dumps(summary))
    if summary["failed_ids"]:
        which = "every canonical solution fails" if summary["correct"] == 0 else "some canonical solutions fail"
        print(f"FAILED: {which} its own tests: {summary['failed_ids']}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m projected_grpo.env", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("selfcheck", help="hack x mode diagonal on every embedded problem")
    p.add_argument("--workers", type=int, default=2)
    p.set_defaults(fn=_selfcheck)
    p = sub.add_parser("canonical", help="grade every canonical solution of an rl-rewardhacking .jsonl")
    p.add_argument("path")
    p.add_argument("--workers", type=int, default=2)
    p.set_defaults(fn=_canonical)
    args = parser.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
