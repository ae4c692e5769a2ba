"""Outputs: hypotheses.csv (every run x target x basis x family), hypotheses.md (per arm and target: the bases
ranked by combined R_w, mean ± std over the arm's runs; a per-family R_w table; the definitions), the R_act vs
R_w scatter and the v_hack trajectory plot. All files are written atomically."""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from pathlib import Path

from projected_grpo.atomic import atomic_path, write_text
from projected_grpo.hypotheses.analyze import VHACK_USED, Result, Trajectory
from projected_grpo.hypotheses.bases import Basis, Kind
from projected_grpo.hypotheses.score import COMBINED

CSV_NAME, MD_NAME = "hypotheses.csv", "hypotheses.md"
SCATTER_NAME, TRAJ_NAME = "hypotheses_scatter.png", "hypotheses_trajectory.png"
CSV_COLUMNS = [
    "run", "arm", "seed", "target", "basis", "kind", "rank", "family",
    "R_w", "R_w_null_mean", "R_w_null_std", "z_w", "R_w_ceiling", "R_w_over_ceiling",
    "R_act", "R_act_null_mean", "R_act_null_std", "z_act", "toward",
]  # fmt: skip
ORIENTED = (Kind.hack.value, Kind.solve.value, Kind.control.value)  # kinds whose rows have a meaningful sign
ROLLING = 5  # steps in the trajectory plot's running mean of the hack rate
KIND_COLOURS = {Kind.hack.value: "tab:red", Kind.control.value: "tab:gray", Kind.solve.value: "tab:blue",
                Kind.data.value: "tab:green", Kind.ceiling.value: "black"}  # fmt: skip


def csv_text(results: list[Result]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(CSV_COLUMNS)
    for r in results:
        for f, sw in r.w.items():
            sa = r.act.get(f)
            act = [sa.value, sa.null_mean, sa.null_std, sa.z] if sa is not None else ["", "", "", ""]
            w.writerow([r.run, r.arm, r.seed, r.target, r.basis, r.kind, r.rank, f,
                        sw.value, sw.null_mean, sw.null_std, sw.z, sw.ceiling, sw.of_ceiling, *act,
                        r.toward if f == COMBINED else ""])  # fmt: skip
    return buf.getvalue()


def mean_std(xs: list[float]) -> tuple[float, float, int]:
    xs = [x for x in xs if not math.isnan(x)]
    if not xs:
        return math.nan, math.nan, 0
    m = sum(xs) / len(xs)
    sd = (sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) ** 0.5 if len(xs) > 1 else 0.0
    return m, sd, len(xs)


def cell(xs: list[float], fmt: str = ".2f") -> str:
    m, sd, n = mean_std(xs)
    if n == 0:
        return "-"
    return f"{m:{fmt}}" if n == 1 else f"{m:{fmt}} ± {sd:{fmt}}"


def groups(results: list[Result]) -> dict[tuple[str, str], dict[str, list[Result]]]:
    """(arm, target) -> basis -> its results over the arm's runs (insertion order)."""
    out: dict[tuple[str, str], dict[str, list[Result]]] = defaultdict(lambda: defaultdict(list))
    for r in results:
        out[(r.arm, r.target)][r.basis].append(r)
    return out


def ranked_table(by_basis: dict[str, list[Result]]) -> str:
    rows = []
    for name, rs in by_basis.items():
        w = [r.w[COMBINED] for r in rs]
        a = [r.act[COMBINED] for r in rs]
        rows.append((mean_std([s.value for s in w])[0], [
            name, rs[0].kind, rs[0].rank, cell([s.value for s in w]), cell([s.z for s in w], ".1f"),
            cell([s.of_ceiling for s in w], ".3f"), cell([s.value for s in a]), cell([s.z for s in a], ".1f"),
            cell([r.toward for r in rs]) if rs[0].kind in ORIENTED else "-",
            f"{w[0].null_mean:.2f} ± {w[0].null_std:.2f}",
        ]))  # fmt: skip
    rows.sort(key=lambda x: -x[0] if not math.isnan(x[0]) else math.inf)
    head = ["basis", "kind", "rank", "R_w", "z (R_w)", "R_w/ceiling", "R_act", "z (R_act)", "toward",
            "R_w null (1 run)"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for _, r in rows]
    return "\n".join(lines)


def family_table(by_basis: dict[str, list[Result]]) -> str:
    fams = sorted({f for rs in by_basis.values() for r in rs for f in r.w if f != COMBINED})
    head = ["basis", *fams, COMBINED]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, rs in by_basis.items():
        cells = [cell([r.w[f].value for r in rs if f in r.w]) for f in [*fams, COMBINED]]
        lines.append("| " + " | ".join([name, *cells]) + " |")
    return "\n".join(lines)


def markdown(results: list[Result], bases: list[Basis], runs: list[str], n_null: int, plots: dict[str, str]) -> str:
    out = [
        "# Which basis explains what GRPO learned?",
        "",
        f"Runs ({len(runs)}): " + ", ".join(f"`{r}`" for r in runs),
        "",
        (
            "R_w = share of the learned knob delta Δ's squared norm a basis captures ÷ its random expectation (rank/r), "
            "per module family (q/k/v/o/gate/up/down) and `combined` = the families' mean (equal weight). "
            "R_act = the same ratio, averaged over held-out (hack − clean) per-completion δS-gradient differences "
            "(pairs of problems no basis is built from). 1.0 = chance. "
            f"z = (score − null mean) / null std over {n_null} random orthonormal bases of the same per-module ranks. "
            "R_w/ceiling = the score over the best any basis of those ranks can reach (a Δ-aligned basis captures all "
            "of Δ), i.e. the (family-balanced) fraction of Δ captured; ≤ 1 by construction. "
            "Cells: mean ± std over the arm's runs (seeds). R_w rewards low rank (a rank-1 basis can reach r, a "
            "rank-5 one r/5): compare bases of different ranks by z or R_w/ceiling. `toward` = of the Δ mass a basis "
            "captures, the share with V Δ < 0, i.e. moved toward the basis' positive side (hack-ward for v_hack, "
            "honest-ward for solve; 0.5 = no preferred sign; for random it is arbitrary)."
        ),
        "",
    ]
    for (arm, target), by_basis in groups(results).items():
        n = len(next(iter(by_basis.values())))
        out += [f"## arm `{arm}`, target `{target}` ({n} run{'s' * (n > 1)})", "", ranked_table(by_basis), "",
                "Per-family R_w:", "", family_table(by_basis), ""]  # fmt: skip
    for title, name in plots.items():
        out += [f"![{title}]({name})", ""]
    out += ["## Definitions", "", "| basis | kind | how |", "|---|---|---|"]
    out += [f"| {b.name} | {b.kind.value} | {b.how} |" for b in bases]
    return "\n".join(out) + "\n"


def scatter(results: list[Result], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gs = groups(results)
    ncols = min(2, len(gs))
    nrows = math.ceil(len(gs) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(6.6 * ncols, 4.6 * nrows), squeeze=False)
    for ax in axes.flat[len(gs) :]:
        ax.set_visible(False)
    for ax, ((arm, target), by_basis) in zip(axes.flat, gs.items()):
        for name, rs in by_basis.items():
            x = max(mean_std([r.act[COMBINED].value for r in rs])[0], 1e-3)
            y = max(mean_std([r.w[COMBINED].value for r in rs])[0], 1e-3)
            kind = rs[0].kind
            ax.scatter([x], [y], marker="*" if kind == Kind.ceiling.value else "o", s=160 if kind == Kind.ceiling.value
                       else 36, color=KIND_COLOURS[kind], zorder=3, label=kind)  # fmt: skip
            ax.annotate(name, (x, y), fontsize=6, xytext=(3, 2), textcoords="offset points")
        ax.axhline(1.0, ls="--", color="k", lw=0.8)
        ax.axvline(1.0, ls="--", color="k", lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("R_act (held-out hack − clean gradients; 1 = chance)")
        ax.set_ylabel("R_w (learned Δ; 1 = chance)")
        ax.set_title(f"{arm}: {target} (n={len(next(iter(by_basis.values())))})", fontsize=9)
        h, lab = ax.get_legend_handles_labels()
        uniq = dict(zip(lab, h))
        ax.legend(uniq.values(), uniq.keys(), fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


def trajectory(trajs: list[Trajectory], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bot) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    for i, t in enumerate(trajs):
        c = f"C{i % 10}"
        label = f"{t.arm} seed {t.seed}"
        top.plot(t.steps, t.r_w, "o-", color=c, label=label)
        if i == 0 and t.steps:
            lo = [m - 2 * s for m, s in zip(t.null_mean, t.null_std)]
            hi = [m + 2 * s for m, s in zip(t.null_mean, t.null_std)]
            top.fill_between(t.steps, lo, hi, color="gray", alpha=0.25, label="random null ± 2 std")
        steps, hack = zip(*t.hack_s) if t.hack_s else ((), ())
        bot.plot(steps, hack, "-", color=c, alpha=0.25, lw=0.8)
        w = ROLLING
        smooth = [sum(hack[max(0, j - w + 1) : j + 1]) / len(hack[max(0, j - w + 1) : j + 1]) for j in range(len(hack))]
        bot.plot(steps, smooth, "-", color=c, lw=1.6, label=label)
    top.axhline(1.0, ls="--", color="k", lw=0.8)
    top.set_ylabel(f"R_w of {VHACK_USED}\non the cumulative Δ (combined)")
    top.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    bot.set_ylabel(f"student hack rate\n(per step; bold: {ROLLING}-step mean)")
    bot.set_xlabel("optimizer step")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


def write_all(out: Path, results: list[Result], trajs: list[Trajectory], bases: list[Basis], runs: list[str],
              n_null: int) -> list[Path]:  # fmt: skip
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    scatter(results, out / SCATTER_NAME)
    trajectory(trajs, out / TRAJ_NAME)
    plots = {"R_act vs R_w": SCATTER_NAME, "v_hack R_w along the run vs hack rate": TRAJ_NAME}
    write_text(out / CSV_NAME, csv_text(results))
    write_text(out / MD_NAME, markdown(results, bases, runs, n_null, plots))
    return [out / n for n in (MD_NAME, CSV_NAME, SCATTER_NAME, TRAJ_NAME)]
