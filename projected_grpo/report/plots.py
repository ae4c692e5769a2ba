"""The report's figures: per-step curves (mean ± std over seeds, faint raw curves with a trailing rolling mean),
in rows of 3 panels; and build_report, which writes report.md and the figures into the first sweep dir."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from pathlib import Path

from projected_grpo.modes import MODES, Mode
from projected_grpo.report.jobs import VANILLA, Job, assign_labels, fill_added_keys, group_rows, load_jobs
from projected_grpo.report.tables import render

SMOOTH_WINDOW = 5  # steps in the trailing rolling mean drawn over each (faint) raw per-step curve


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
    filled = fill_added_keys(done)  # keys a later schema added, at their default: read as that default
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
    (out / "report.md").write_text(render(roots, rows, done, problems, filled))
    return out / "report.md"
