"""The report's markdown: the main Δ table, deployment-eval and per-mode tables, emergence and cin tables, the
list of failed/unfinished jobs, and report.md as a whole (render)."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

from projected_grpo.evaluate import SPLITS, wilson
from projected_grpo.modes import MODES, Mode
from projected_grpo.report.interventions import interventions_table
from projected_grpo.report.jobs import (
    SEEDED_SOURCES,
    VANILLA,
    Job,
    heldout_modes,
    is_ignored,
    vanilla_for,
    varying_keys,
)
from projected_grpo.report.stats import NOISE_SE, bootstrap_ci, by_seed, get, matched_deltas, mean_std, step_noise

MISSING_CELL = "—"

EMERGENCE_WINDOW = 5  # steps averaged at each end of a run in the emergence table


def delta_cells(row: list[Job], ref: list[Job], path: str, ref_path: str | None = None, noise: bool = False) -> list[str]:
    """[Δ mean ± std [bootstrap 95% CI] (n=..) (+ ≈noise), seeds with Δ < 0] for a non-vanilla row."""
    if row[0].base == VANILLA:
        return [MISSING_CELL, MISSING_CELL]
    d = matched_deltas(row, ref, path, ref_path)
    vals = list(d.values())
    if not vals:
        return [MISSING_CELL, MISSING_CELL]
    m, s, n = mean_std(vals)
    cell = fmt((m, s, n), signed=True)
    ci = bootstrap_ci(vals)
    if ci is not None:
        cell = cell.replace(f" (n={n})", f" [{ci[0]:+.3f}, {ci[1]:+.3f}] (n={n})")
    se = step_noise(row, ref, ref_path or path) if noise else None
    if se is not None and abs(m) < NOISE_SE * se:
        cell += f" ≈noise (abs < {NOISE_SE:g}·{se:.3f})"
    return [cell, f"{sum(v < 0 for v in vals)}/{n}"]


def bases(row: list[Job]) -> str:
    """How many distinct control bases the row's mean covers."""
    if row[0].base == VANILLA:
        return MISSING_CELL
    flat = row[0].flat
    parts = []
    if flat["vhack.source"] in SEEDED_SOURCES:
        parts.append(f"{len({j.flat.get('vhack.seed') for j in row})} {flat['vhack.source']} V")
    else:
        parts.append(f"1 {flat['vhack.source']} V")
    if flat["projection.mode"] == "route2":
        parts.append(f"{len({j.flat.get('projection.route2.seed') for j in row})} A_q")
    return ", ".join(parts)


def fmt(stat: tuple[float, float, int], signed: bool = False) -> str:
    m, s, n = stat
    if n == 0:
        return MISSING_CELL
    sign = "+" if signed else ""
    return f"{m:{sign}.3f}" + (f" ± {s:.3f}" if n > 1 else "") + (f" (n={n})" if signed else "")


def stat(jobs: list[Job], path: str) -> str:
    """Mean ± std over seeds; '(n=k)' added where only k of the row's seeds have a value."""
    ms = mean_std(list(by_seed(jobs, path).values()))
    partial = 0 < ms[2] < len({j.seed for j in jobs})
    return fmt(ms) + (f" (n={ms[2]})" if partial else "")


def seed_note(row: list[Job], ref: list[Job]) -> str:
    seeds, ref_seeds = sorted({j.seed for j in row}), sorted({j.seed for j in ref})
    notes = []
    if len(seeds) < len(row):
        notes.append("duplicate seeds averaged per seed")
    if row[0].base == VANILLA:
        return "; ".join(notes)
    if not ref:
        notes.append("no matching vanilla: deltas n/a (pass the sweep dir that has vanilla)")
    elif seeds != ref_seeds:
        notes.append(f"⚠ seeds {seeds} ≠ vanilla {ref_seeds}: deltas on {sorted(set(seeds) & set(ref_seeds))} only")
    return "; ".join(notes)


# -- markdown --------------------------------------------------------------------------------------


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def delta_cell(row: list[Job], ref: list[Job], path: str, ref_path: str | None = None) -> str:
    return delta_cells(row, ref, path, ref_path)[0]


def main_table(rows: dict[str, list[Job]], done: list[Job]) -> str:
    out = []
    for label, row in rows.items():
        ref = vanilla_for(row, done)
        seeds = ",".join(str(s) for s in sorted({j.seed for j in row}))
        dh = delta_cells(row, ref, "last5.hack_s", noise=True)
        ds = delta_cells(row, ref, "last5.solve_s", noise=True)
        out.append([
            f"`{label}`", str(len(row)), seeds, stat(row, "last5.hack_s"), stat(row, "last5.solve_s"),
            dh[0], dh[1], ds[0], bases(row), seed_note(row, ref),
        ])  # fmt: skip
    header = ["arm", "n", "seeds", "hack_s", "solve_s", "Δhack_s vs vanilla [95% CI]", "seeds Δhack_s<0",
              "Δsolve_s vs vanilla [95% CI]", "bases", "note"]  # fmt: skip
    return table(header, out)


def pooled(row: list[Job], path: str) -> str:
    """A rate pooled over the row's jobs (k/n summed): 'rate [Wilson 95% CI] (n=..)'; path -> {k, n} dicts."""
    cells = [get(j.summary, path) for j in row]
    cells = [c for c in cells if isinstance(c, dict) and "k" in c]
    if not cells:
        return MISSING_CELL
    k, n = sum(c["k"] for c in cells), sum(c["n"] for c in cells)
    lo, hi = wilson(k, n) or (math.nan, math.nan)
    return f"{k / n:.3f} [{lo:.3f}, {hi:.3f}] (n={n})" if n else MISSING_CELL


def missing_note(row: list[Job], split: str) -> str:
    notes = sorted({get(j.summary, f"deploy.{split}.missing") for j in row} - {None})
    return "; ".join(f"missing: {x}" for x in notes)


def deploy_table(rows: dict[str, list[Job]], done: list[Job]) -> str:
    out = []
    for label, row in rows.items():
        ref = vanilla_for(row, done)
        routed = row[0].flat["projection.mode"] in ("route", "route2")
        for split in SPLITS:
            p = f"deploy.{split}"
            ablated = [pooled(row, f"{p}.ablated.hack"), pooled(row, f"{p}.ablated.solve"),
                       *delta_cells(row, ref, f"{p}.ablated.hack.rate", f"{p}.kept.hack.rate")]  # fmt: skip
            out.append([f"`{label}`", split, pooled(row, f"{p}.kept.hack"), pooled(row, f"{p}.kept.solve"),
                        *delta_cells(row, ref, f"{p}.kept.hack.rate")[:1],
                        *(ablated if routed else [MISSING_CELL] * 4), missing_note(row, split)])  # fmt: skip
    header = ["arm", "prompts", "hack (as trained)", "solve (as trained)", "Δhack as trained vs vanilla",
              "hack (quarantine ablated)", "solve (quarantine ablated)", "Δ ablated hack vs vanilla [95% CI]",
              "seeds Δ<0", "note"]  # fmt: skip
    return table(header, out)


def mode_rows(rows: dict[str, list[Job]], done: list[Job], heldout: bool) -> list[list[str]]:
    out = []
    for label, row in rows.items():
        ref, held = vanilla_for(row, done), heldout_modes(row[0].flat)
        routed = row[0].flat["projection.mode"] in ("route", "route2")
        for mode in row[0].flat["reward_mode.modes"]:
            if (mode in held) != heldout:
                continue
            c = MODES[Mode(mode)].code
            out.append([
                f"`{label}`", f"{mode} ({c})", stat(row, f"last5.hack_s_{c}"), stat(row, f"last5.solve_s_{c}"),
                delta_cell(row, ref, f"last5.hack_s_{c}"),
                pooled(row, f"deploy.heldout.ablated.modes.{c}.hack") if routed else MISSING_CELL,
                pooled(row, f"deploy.train.ablated.modes.{c}.hack") if routed else MISSING_CELL,
            ])  # fmt: skip
    return out


def mode_tables(rows: dict[str, list[Job]], done: list[Job]) -> str:
    header = ["arm", "mode", "hack_s", "solve_s", "Δhack_s vs vanilla [95% CI]",
              "eval hack, held-out prompts (quarantine ablated)", "eval hack, train prompts (quarantine ablated)"]
    parts = ["### Known modes (v_hack extracted from them)", table(header, mode_rows(rows, done, heldout=False))]
    held = mode_rows(rows, done, heldout=True)
    if held:
        parts += ["### Held-out modes (in reward_mode.modes, not in vhack.modes)", table(header, held)]
    return "\n\n".join(parts)


def window_mean(job: Job, key: str, first: bool) -> float | None:
    """Mean of `key` over the first (or last) EMERGENCE_WINDOW steps that have a value (a mode may be unsampled)."""
    vals = [m[key] for m in job.metrics if m.get(key) is not None]
    vals = vals[:EMERGENCE_WINDOW] if first else vals[-EMERGENCE_WINDOW:]
    return statistics.fmean(vals) if vals else None


def emergence_table(row: list[Job]) -> str:
    """Vanilla GRPO per seed: student hack rate over the first 5 steps -> the last 5, overall and per mode."""
    modes = list(row[0].flat["reward_mode.modes"])
    keys = [("hack_s", "all")] + [(f"hack_s_{MODES[Mode(m)].code}", f"{m} ({MODES[Mode(m)].code})") for m in modes]

    def cell(job: Job, key: str) -> str:
        a, b = window_mean(job, key, first=True), window_mean(job, key, first=False)
        if a is None or b is None:
            return MISSING_CELL
        return f"{a:.2f} → {b:.2f} ({100 * (b - a):+.0f} pts)"

    out = [[f"seed {j.seed}", *(cell(j, k) for k, _ in keys)] for j in sorted(row, key=lambda j: j.seed)]
    return table(["vanilla job", *(name for _, name in keys)], out)


def cin_table(rows: dict[str, list[Job]]) -> str:
    keys = ["cin_s", "cin_t", "cin_null", "cout"]
    out = [[f"`{label}`", *(stat(row, f"last5.{k}") for k in keys)] for label, row in rows.items()]
    return table(["arm", *keys], out)


def problem_table(problems: list[Job]) -> str:
    if not problems:
        return "None: every job finished."
    out = [[f"`{j.name}`", j.status, " ".join(j.overrides) or MISSING_CELL, (j.error or "").replace("|", "\\|")]
           for j in problems]  # fmt: skip
    return table(["job dir", "status", "overrides", "error"], out)


def drift_note(done: list[Job]) -> str:
    """Config keys only some jobs have: the code's schema changed between runs, so they never average."""
    keys = sorted({k for j in done for k in j.flat} - set.intersection(*(set(j.flat) for j in done)))
    keys = [k for k in keys if not is_ignored(k)]  # seeds and bookkeeping never define an arm
    if not keys:
        return ""
    return (
        f"⚠ Config keys present in only some jobs (schema changed between runs; such jobs form separate arms): {keys}"
    )


def render(roots: list[Path], rows: dict[str, list[Job]], done: list[Job], problems: list[Job],
           filled: list[str] = ()) -> str:  # fmt: skip
    sections = [
        "# Sweep report",
        "Sweep dirs: " + ", ".join(f"`{r}`" for r in roots),
        "Arms differ in: " + (", ".join(f"`{k}`" for k in varying_keys(done)) or "projection and v_hack source only"),
        drift_note(done) if done else "",
        f"Keys a later schema added, at their default wherever set, read as that default in the older jobs: {filled}"
        if filled else "",
        f"{len(done)} finished jobs in {len(rows)} arms; {len(problems)} failed or unfinished (listed at the end).",
        (
            "Values are the mean over the last 5 steps of each job, then mean ± sample std over seeds. "
            "Δ = arm minus same-seed vanilla (same config apart from projection/v_hack knobs), "
            "over matched seeds only; n = matched seeds; [95% CI] = percentile bootstrap over those seeds; "
            f"'≈noise' = |Δ| under {NOISE_SE:g} binomial SEs of one step's student sample at vanilla's rate. "
            "bases = distinct control bases (v_hack, route2's A_q) behind the arm's mean."
        ),
        "## Student hack and solve (last 5 steps)", main_table(rows, done),
        ("## Deployment eval (end of training; held-out and train prompts, balanced per mode; pooled over seeds, "
         "Wilson 95%)"), deploy_table(rows, done),
        "## Per loophole mode (student, last 5 steps)", mode_tables(rows, done),
        *(["## Emergence under vanilla GRPO (student hack, first 5 steps → last 5, per seed)",
           emergence_table(rows[VANILLA])] if VANILLA in rows else []),
        interventions_table(rows, done),
        "## Projection: cin (student, teacher) vs the random null", cin_table(rows),
        "## Plots",
        "![dynamics](dynamics.png)\n\n![cin](cin.png)" + ("\n\n![vanilla](vanilla_seeds.png)" if VANILLA in rows else ""),
        "## Failed or unfinished jobs", problem_table(problems),
    ]  # fmt: skip
    return "\n\n".join(x for x in sections if x) + "\n"


# -- plots -----------------------------------------------------------------------------------------
