"""Sweep report: `python -m projected_grpo.report <sweep_dir> [<sweep_dir> ...]`.

Reads every job dir under the given dirs (any dir holding status.json, summary.json or metrics.jsonl)
and writes report.md, dynamics.png and cin.png into the first dir.

- An *arm* is projection mode + v_hack source (`vanilla`, `erase_real`, `route_random`, ...) plus every
  config value that differs between the jobs (e.g. `vhack.k=5`, `heldout=fm`), the seed excepted.
  Jobs with different configs are therefore never averaged together.
- Mean ± sample std (ddof=1) over the seeds of an arm; n = number of jobs.
- Paired deltas: for each seed, arm minus the SAME-SEED vanilla job of the same context (the config
  minus projection.* and vhack.* knobs other than vhack.modes, which change nothing in vanilla training).
  Only seeds present in both are used; rows whose seed set differs from vanilla's are flagged.
  Each Δ comes with a percentile bootstrap 95% interval over the matched seeds (BOOTSTRAP resamples of the
  seeds, fixed RNG), the count of seeds with Δ < 0, and "≈noise" where |Δ| is under two binomial standard
  errors of ONE step's student sample (sqrt(p(1-p)/students_per_step), p = vanilla's mean).
- "bases": how many distinct control bases an arm's mean covers (random/shuffled v_hack and route2's A_q are
  seeded by vhack.seed, which follows trainer.seed; real and nonhack are one extraction).
- Deployment eval: held-out and train prompts (balanced per mode), pooled over the arm's seeds with
  Wilson 95% intervals and n = graded samples; a missing split says why.
- Failed jobs (with their error) and unfinished ones (running, or no summary.json) are listed, not dropped.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from projected_grpo.evaluate import SPLITS, wilson
from projected_grpo.modes import MODES, Mode

JOB_FILES = ("status.json", "summary.json", "metrics.jsonl")
# Config keys that never define an arm (bookkeeping, or the seed itself).
IGNORED = ("trainer.seed", "trainer.resume", "logger.", "paths.", "vhack.path", "env.n_workers", "model.device",
           "vhack.seed", "projection.route2.seed")  # the control seeds follow trainer.seed: counted as "bases"
SEEDED_SOURCES = ("random", "shuffled")  # v_hack sources whose basis depends on vhack.seed
BOOTSTRAP = 10_000  # resamples of the seeds for the Δ intervals
NOISE_SE = 2.0  # "≈noise": |Δ| under this many binomial SEs of one step's student sample
# Keys already named by the arm's base label.
BASE_KEYS = ("projection.mode", "vhack.source", "projection.route2.mask")
VANILLA = "vanilla"
MISSING_CELL = "—"
EMERGENCE_WINDOW = 5  # steps averaged at each end of a run in the emergence table
SMOOTH_WINDOW = 5  # steps in the trailing rolling mean drawn over each (faint) raw per-step curve


@dataclass
class Job:
    path: Path
    root: Path
    status: str  # done | failed | running | incomplete
    error: str | None = None
    summary: dict | None = None
    metrics: list[dict] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)
    flat: dict = field(default_factory=dict)  # flattened resolved config (done jobs)
    label: str = ""
    context: tuple = ()

    @property
    def name(self) -> str:
        return str(self.path.relative_to(self.root)) if self.path != self.root else self.path.name

    @property
    def seed(self) -> int:
        return int(self.summary["seed"])

    @property
    def base(self) -> str:
        mode = self.flat["projection.mode"]
        if mode == "route2":  # the conf/arm name: route2_grad | route2_act (+ vhack.source when not real)
            src = self.flat["vhack.source"]
            return f"route2_{self.flat.get('projection.route2.mask')}" + ("" if src == "real" else f"_{src}")
        return VANILLA if mode == "none" else f"{mode}_{self.flat['vhack.source']}"


# -- loading ---------------------------------------------------------------------------------------


def find_job_dirs(root: Path) -> list[Path]:
    dirs = {p.parent for name in JOB_FILES for p in root.rglob(name)}
    return sorted(d for d in dirs if ".hydra" not in d.parts)


def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def read_metrics(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_overrides(job_dir: Path) -> list[str]:
    path = job_dir / ".hydra" / "overrides.yaml"
    if not path.exists():
        return []
    from omegaconf import OmegaConf

    return [str(o) for o in OmegaConf.load(path)]


def load_job(job_dir: Path, root: Path) -> Job:
    status = read_json(job_dir / "status.json") or {}
    summary = read_json(job_dir / "summary.json")
    job = Job(job_dir, root, "done", summary=summary, metrics=read_metrics(job_dir / "metrics.jsonl"))
    job.overrides = read_overrides(job_dir)
    if status.get("status") == "failed":
        job.status, job.error = "failed", status.get("error") or "(no error text in status.json)"
    elif summary is None or status.get("status") == "running":
        job.status = "running" if status.get("status") == "running" else "incomplete"
        job.error = f"status.json says {status.get('status')!r}" if status else "no status.json"
        job.error += "; summary.json is stale (resumed run?)" if summary else "; no summary.json yet"
    else:
        job.flat = flatten(summary["config"])
    return job


def load_jobs(roots: list[Path]) -> list[Job]:
    for root in roots:
        if not root.is_dir():
            raise SystemExit(f"report: sweep dir {root} does not exist; pass the dir Hydra printed for the multirun")
    jobs = [load_job(d, root) for root in roots for d in find_job_dirs(root)]
    if not jobs:
        raise SystemExit(f"report: no job dirs (a dir with one of {JOB_FILES}) under {[str(r) for r in roots]}")
    return jobs


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = hashable(v)
    return out


def hashable(v):
    """Lists of scalars become tuples (kept readable in labels); anything else nested becomes JSON text."""
    if isinstance(v, list):
        return tuple(v) if all(isinstance(x, (str, int, float, bool)) or x is None for x in v) else json.dumps(v)
    return v


# -- arms and pairing --------------------------------------------------------------------------------


def is_ignored(key: str) -> bool:
    return any(key == p or (p.endswith(".") and key.startswith(p)) for p in IGNORED)


def varying_keys(jobs: list[Job]) -> list[str]:
    keys = sorted({k for j in jobs for k in j.flat})
    return [k for k in keys if not is_ignored(k) and k not in BASE_KEYS and len({j.flat.get(k) for j in jobs}) > 1]


def mode_codes(modes) -> str:
    codes = [MODES[Mode(m)].code for m in modes]
    return "+".join(codes) if codes else "none"


def heldout_modes(flat: dict) -> list[str]:
    """Modes the student trains on (reward_mode.modes) that v_hack was not extracted from."""
    return [m for m in flat["reward_mode.modes"] if m not in flat["vhack.modes"]]


def label_part(job: Job, key: str) -> str | None:
    if key not in job.flat:
        return None  # key absent from this job's config (older schema): flagged in the report header
    value = job.flat[key]
    if key == "vhack.modes":
        return f"heldout={mode_codes(heldout_modes(job.flat))}"
    if key == "teacher.modes" and value == job.flat.get("vhack.modes"):
        return None  # same list as vhack.modes: already named by heldout=
    if isinstance(value, tuple):
        return f"{key}={mode_codes(value) if key.endswith('modes') else ','.join(map(str, value))}"
    return f"{key}={value}"


def context_key(job: Job) -> tuple:
    """What vanilla must share with an arm to pair with it: all but seed and projection/v_hack knobs."""
    return tuple(sorted((k, v) for k, v in job.flat.items() if is_context(k)))


def is_context(key: str) -> bool:
    return not is_ignored(key) and (key == "vhack.modes" or not key.startswith(("projection.", "vhack.")))


def assign_labels(done: list[Job]) -> None:
    keys = varying_keys(done)
    for job in done:
        parts = [p for p in (label_part(job, k) for k in keys) if p]
        job.label = " ".join([job.base, *parts])
        job.context = context_key(job)


def group_rows(done: list[Job]) -> dict[str, list[Job]]:
    rows = defaultdict(list)
    for job in sorted(done, key=lambda j: (j.base != VANILLA, j.label, j.seed)):
        rows[job.label].append(job)
    return dict(rows)


def vanilla_for(row: list[Job], done: list[Job]) -> list[Job]:
    return [j for j in done if j.base == VANILLA and j.context == row[0].context]


# -- statistics ------------------------------------------------------------------------------------


def get(summary: dict, path: str):
    """summary['a']['b'] for path 'a.b'; None where absent."""
    node = summary
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def by_seed(jobs: list[Job], path: str) -> dict[int, float]:
    """Per-seed value (mean over duplicate jobs of a seed), skipping missing values."""
    vals = defaultdict(list)
    for j in jobs:
        v = get(j.summary, path)
        if v is not None and not (isinstance(v, float) and math.isnan(v)):
            vals[j.seed].append(float(v))
    return {s: statistics.fmean(v) for s, v in vals.items()}


def mean_std(values: list[float]) -> tuple[float, float, int]:
    n = len(values)
    if n == 0:
        return math.nan, math.nan, 0
    return statistics.fmean(values), (statistics.stdev(values) if n > 1 else math.nan), n


def paired_delta(row: list[Job], ref: list[Job], path: str, ref_path: str | None = None) -> tuple[float, float, int]:
    """Mean ± std over matched seeds of (row - same-seed vanilla)."""
    a, b = by_seed(row, path), by_seed(ref, ref_path or path)
    return mean_std([a[s] - b[s] for s in sorted(set(a) & set(b))])


def bootstrap_ci(values: list[float], n_boot: int = BOOTSTRAP, seed: int = 0) -> tuple[float, float] | None:
    """Percentile bootstrap 95% interval of the mean over `values` (resampled with replacement); None for n < 2."""
    n = len(values)
    if n < 2:
        return None
    rng = random.Random(seed)
    means = sorted(statistics.fmean(rng.choices(values, k=n)) for _ in range(n_boot))
    return means[int(0.025 * n_boot)], means[int(0.975 * n_boot) - 1]


def matched_deltas(row: list[Job], ref: list[Job], path: str, ref_path: str | None = None) -> dict[int, float]:
    """seed -> row minus same-seed vanilla, on the seeds both have."""
    a, b = by_seed(row, path), by_seed(ref, ref_path or path)
    return {s: a[s] - b[s] for s in sorted(set(a) & set(b))}


def step_noise(row: list[Job], ref: list[Job], ref_path: str) -> float | None:
    """Binomial SE of one step's student sample at vanilla's mean rate: sqrt(p(1-p)/students_per_step)."""
    ns = {j.summary.get("students_per_step") for j in row + ref}
    p = list(by_seed(ref, ref_path).values())
    if None in ns or len(ns) != 1 or not p:
        return None
    pm = min(max(statistics.fmean(p), 0.0), 1.0)
    return math.sqrt(pm * (1 - pm) / ns.pop())


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
    if not keys:
        return ""
    return (
        f"⚠ Config keys present in only some jobs (schema changed between runs; such jobs form separate arms): {keys}"
    )


def render(roots: list[Path], rows: dict[str, list[Job]], done: list[Job], problems: list[Job]) -> str:
    sections = [
        "# Sweep report",
        "Sweep dirs: " + ", ".join(f"`{r}`" for r in roots),
        "Arms differ in: " + (", ".join(f"`{k}`" for k in varying_keys(done)) or "projection and v_hack source only"),
        drift_note(done) if done else "",
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
        "## Projection: cin (student, teacher) vs the random null", cin_table(rows),
        "## Plots",
        "![dynamics](dynamics.png)\n\n![cin](cin.png)" + ("\n\n![vanilla](vanilla_seeds.png)" if VANILLA in rows else ""),
        "## Failed or unfinished jobs", problem_table(problems),
    ]  # fmt: skip
    return "\n\n".join(x for x in sections if x) + "\n"


# -- plots -----------------------------------------------------------------------------------------


def curve(row: list[Job], key: str) -> tuple[list[int], list[float], list[float]]:
    """Per step: mean and std over the row's jobs (std 0 where a single job has the step)."""
    vals = defaultdict(list)
    for j in row:
        for m in j.metrics:
            if m.get(key) is not None:
                vals[m["step"]].append(float(m[key]))
    steps = sorted(vals)
    means = [statistics.fmean(vals[s]) for s in steps]
    stds = [statistics.stdev(vals[s]) if len(vals[s]) > 1 else 0.0 for s in steps]
    return steps, means, stds


def rolling_mean(values: list[float], window: int) -> list[float]:
    """Trailing mean over the last `window` values (fewer at the start): value i averages values[i-window+1 : i+1]."""
    return [statistics.fmean(values[max(0, i - window + 1) : i + 1]) for i in range(len(values))]


def plot(rows: dict[str, list[Job]], keys: list[str], path: Path, title: str, sharey: bool = False) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    ncols = min(3, len(keys))  # wrap into rows of 3 panels
    nrows = math.ceil(len(keys) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.5 * ncols, 4 * nrows), squeeze=False, sharey=sharey)
    for ax in axes.flat[len(keys) :]:
        ax.set_visible(False)
    for ax, key in zip(axes.flat, keys):
        for label, row in rows.items():
            steps, m, s = curve(row, key)
            if steps:  # 32 samples a step make the raw curve noisy: raw faint, its rolling mean solid
                (line,) = ax.plot(steps, rolling_mean(m, SMOOTH_WINDOW), label=label)
                ax.plot(steps, m, color=line.get_color(), alpha=0.25, linewidth=0.8)
                ax.fill_between(steps, [a - b for a, b in zip(m, s)], [a + b for a, b in zip(m, s)],
                                color=line.get_color(), alpha=0.1)  # fmt: skip
        ax.set(title=f"{key} (rolling mean of {SMOOTH_WINDOW} steps; raw faint)", xlabel="step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    last = axes.flat[len(keys) - 1]
    if last.get_legend_handles_labels()[0]:  # a key with no values in any job draws nothing to label
        last.legend(fontsize=7, loc="best")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# -- entry point -----------------------------------------------------------------------------------


def build_report(roots: list[Path]) -> Path:
    roots = [Path(r) for r in roots]
    jobs = load_jobs(roots)
    done = [j for j in jobs if j.status == "done"]
    problems = [j for j in jobs if j.status != "done"]
    assign_labels(done)
    rows = group_rows(done)
    out = roots[0]
    plot(rows, ["hack_s", "solve_s"], out / "dynamics.png", "student hack and solve per step (mean ± std over seeds)")
    plot(rows, ["cin_s", "cin_t", "cin_null"], out / "cin.png", "cin per step (mean ± std over seeds)", sharey=True)
    if VANILLA in rows:  # the emergence curve: vanilla GRPO, one line per seed
        seeds = {f"seed {j.seed}": [j] for j in sorted(rows[VANILLA], key=lambda j: j.seed)}
        mode_keys = [f"hack_s_{MODES[Mode(m)].code}" for m in rows[VANILLA][0].flat["reward_mode.modes"]]
        plot(seeds, ["hack_s", "solve_s", *mode_keys], out / "vanilla_seeds.png",
             "vanilla GRPO: student hack (overall and per mode) and solve per seed")  # fmt: skip
    (out / "report.md").write_text(render(roots, rows, done, problems))
    return out / "report.md"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m projected_grpo.report", description=__doc__.splitlines()[0])
    ap.add_argument("sweep_dirs", nargs="+", type=Path, help="Hydra multirun dirs; output goes to the first")
    args = ap.parse_args(argv)
    path = build_report(args.sweep_dirs)
    print(f"report: wrote {path} (+ dynamics.png, cin.png, vanilla_seeds.png with a vanilla arm)", file=sys.stderr)


if __name__ == "__main__":
    main()
