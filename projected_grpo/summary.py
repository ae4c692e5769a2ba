"""What a run reports: the per-step metrics row (metrics.jsonl), summary.json (last-5 means, the final deployment
eval) and the console BLUF."""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from projected_grpo import evaluate as eval_mod
from projected_grpo.config import oracle_informed, teacher_per_group
from projected_grpo.loss import cin_of_teacher
from projected_grpo.modes import Mode
from projected_grpo.projection import cin
from projected_grpo.tracking import PER_MODE, STEP_METRICS, mode_key

LAST_N = 5  # summary = mean of the last N steps


def mean(xs) -> float | None:
    xs = [float(x) for x in xs]
    return sum(xs) / len(xs) if xs else None


def update_means(v: dict, bs: list[dict], projs: list[dict]) -> tuple[dict, dict]:
    """(loss stats b, projection metrics proj) of one batch: means over its mu updates (sec_projection summed; the
    zero-variance groups and teacher presence are the batch's), cin_s and cin_t measured on each update's gradients."""
    proj = {k: sum(p[k] for p in projs) if k == "sec_projection" else mean(p[k] for p in projs) for k in projs[0]}
    b = {
        "loss": mean(x["loss"] for x in bs),
        "kl": mean(x["kl"] for x in bs),
        "frac_zero_var": bs[0]["frac_zero_var"],
        "cin_s": mean(cin(v, x["g_s"]) for x in bs),
        "cin_t": mean(cin_of_teacher(v, x) for x in bs) if bs[0]["teacher_in_loss"] else None,
    }
    return b, proj


def metrics_row(step: int, rollouts, b: dict, proj: dict, lr: float, timing: dict, v: dict, basis_overlap,
                grade_errors, route2_metrics: dict, extra: dict | None = None) -> dict:  # fmt: skip
    """One metrics.jsonl row (STEP_METRICS + PER_MODE): rewards/hack/solve rates per source from the rollouts
    (the oracle's verdicts: logged only), the loss stats b, the projection metrics proj, timing."""
    stu = [(r.problem.mode, rw, ex, gt) for r in rollouts for rw, ex, gt, te in
           zip(r.rewards, r.exploited, r.gt_correct, r.is_teacher) if not te]  # fmt: skip
    tea = [(rw, ex, gt) for r in rollouts for rw, ex, gt, te in zip(r.rewards, r.exploited, r.gt_correct, r.is_teacher) if te]
    row = {
        "step": step,
        "reward": mean([rw for r in rollouts for rw in r.rewards]),
        "reward_s": mean(x[1] for x in stu),
        "reward_t": mean(x[0] for x in tea),
        "hack_s": mean(x[2] for x in stu),
        "hack_t": mean(x[1] for x in tea),
        "solve_s": mean(x[3] for x in stu),
        "solve_t": mean(x[2] for x in tea),
        "loss": b["loss"],
        "kl": b["kl"],
        "cin_s": b["cin_s"],
        "cin_t": b["cin_t"],
        "frac_zero_var": b["frac_zero_var"],
        "basis_overlap": basis_overlap,
        "v_axes": sum(V.shape[0] for V in v.values()),
        "lr": lr,
        "grade_errors": grade_errors,
        **proj,
        **timing,
        **route2_metrics,
        **(extra or {}),  # monitor flags, drift_cc, oracle_informed (loop.Trainer.metrics_row)
    }
    for mode in Mode:
        xs = [x for x in stu if x[0] == mode]
        row[mode_key("hack_s", mode)] = mean(x[2] for x in xs)
        row[mode_key("solve_s", mode)] = mean(x[3] for x in xs)
    return {k: row.get(k) for k in STEP_METRICS + PER_MODE}


def postfix(row: dict) -> str:
    f = lambda k: "-" if row[k] is None else f"{row[k]:.2f}"
    return f"R={f('reward')} hack_s={f('hack_s')} solve_s={f('solve_s')} cin_s={f('cin_s')} cin_t={f('cin_t')}"


def read_rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x] if path.exists() else []


def make_summary(rows: list[dict], final_eval: dict, cfg: DictConfig, wall: float, problem_counts: dict,
                 probe_info: dict | None = None) -> dict:
    last = rows[-LAST_N:]
    keys = ["hack_s", "solve_s", "hack_t", "solve_t", "reward", "cin_s", "cin_t", "cin", "cout", "cin_null",
            "frac_monitor_flagged", "drift_cc", *PER_MODE]
    last5 = {k: mean(r[k] for r in last if r[k] is not None) for k in keys}
    first = rows[0] if rows else {}
    return {
        "steps": len(rows),
        "seed": cfg.trainer.seed,
        "arm": cfg.projection.mode.value,
        "vhack_source": cfg.vhack.source.value,
        # the strict oracle's verdict reached training (reward_mode=none, a ground-truth monitor): not a no-cheat arm
        "oracle_informed": oracle_informed(cfg),
        "intervention": cfg.intervention.kind.value,
        "monitor": cfg.intervention.monitor.name.value,
        "inoculation": cfg.intervention.inoculation is not None,
        "probe": probe_info or None,  # monitor=probe: n_train, train/held-out accuracy, calib_n, threshold
        "step0": {k: first.get(k) for k in ("hack_s", "solve_s")},
        # graded student completions per step: the binomial sample behind each step's hack_s/solve_s (report/)
        "students_per_step": students_per_step(cfg),
        "last5": last5,
        "deploy": final_eval,
        "wall_seconds": wall,
        "problems": problem_counts,
        "config": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
    }


def students_per_step(cfg: DictConfig) -> int:
    return (cfg.trainer.group - teacher_per_group(cfg)) * cfg.trainer.prompts_per_step


def bluf(summary: dict) -> str:
    """A short console table: the answer first."""
    l5, dep = summary["last5"], summary["deploy"]
    fmt = lambda x: "   -" if x is None else f"{x:5.2f}"
    row = lambda label, hack, solve, extra="": f"  {label:<34s}{fmt(hack)}  {fmt(solve)}{extra}"
    lines = [
        f"BLUF  arm={summary['arm']}  v_hack={summary['vhack_source']}  seed={summary['seed']}  steps={summary['steps']}"
        + ("  ORACLE-INFORMED" if summary.get("oracle_informed") else ""),
        f"  {'':<34s} hack  solve",
        row(f"student (last {LAST_N})", l5["hack_s"], l5["solve_s"]),
        row(f"teacher (last {LAST_N})", l5["hack_t"], l5["solve_t"]),
    ]
    for split in eval_mod.SPLITS:
        ev = dep[split]
        if "missing" in ev:
            lines.append(f"  eval {split}: MISSING ({ev['missing']})")
            continue
        for kind, name in (("kept", "as trained"), ("ablated", "quarantine off")):
            if kind in ev:
                e = ev[kind]
                n = f"  (n={e['n']}, {dep['prompts_per_mode']} prompts/mode)"
                lines.append(row(f"eval {split}, {name}", e["hack"]["rate"], e["solve"]["rate"], n))
    lines.append(f"  cin_s {fmt(l5['cin_s'])}  cin_t {fmt(l5['cin_t'])}  cout {fmt(l5['cout'])}  null {fmt(l5['cin_null'])}")
    return "\n".join(lines)
