"""Per run: the learned deltas (targets), every candidate basis scored on them (R_w) and on held-out gradient
differences (R_act), and v_hack's R_w along the run's snapshots."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import OmegaConf

from projected_grpo import snapshots
from projected_grpo.adapter import AntiPaSTOLinear
from projected_grpo.config import ProjectionMode, TrainConfig, validate
from projected_grpo.hypotheses.bases import Basis, Kind, early_basis
from projected_grpo.hypotheses.score import COMBINED, Score, ceiling_basis, score, toward_share

# What a run's delta is taken of: the main knob; the quarantine knob (route); route2's quarantine LoRA, as the
# part of B_q A_q that lies in the knob space: diag(Uᵀ B_q A_q Vhᵀ) [r] (the least-squares δS of that weight delta).
TARGETS = ("delta_s", "delta_s_hack", "route2_quarantine")
VHACK_USED = "v_hack (as used)"


class RunError(ValueError):
    """A run dir that cannot be analysed; says what is missing and how to get it."""


@dataclass
class Run:
    path: Path
    cfg: object
    arm: str
    seed: int
    snaps: list[snapshots.Snapshot]
    hack_s: list[tuple[int, float]]  # (step, student hack rate) from metrics.jsonl


def arm_label(cfg) -> str:
    mode = ProjectionMode(cfg.projection.mode)
    if mode == ProjectionMode.none:
        return "vanilla"
    src = getattr(cfg.vhack.source, "value", cfg.vhack.source)
    extra = (
        f"_{getattr(cfg.projection.route2.mask, 'value', cfg.projection.route2.mask)}"
        if mode == ProjectionMode.route2
        else ""
    )
    return f"{mode.value}{extra}_{src}"


def load_run(path: Path) -> Run:
    path = Path(path)
    status = path / "status.json"
    if not status.exists() or json.loads(status.read_text()).get("status") != "done":
        raise RunError(f"{path}: no status.json with status 'done'; analyse finished runs only (train it to the end)")
    cfg_path = path / ".hydra" / "config.yaml"
    if not cfg_path.exists():
        raise RunError(f"{path}: no .hydra/config.yaml; expected a run dir written by train.py")
    cfg = OmegaConf.merge(OmegaConf.structured(TrainConfig), OmegaConf.load(cfg_path))
    validate(cfg)
    rows = [json.loads(x) for x in (path / "metrics.jsonl").read_text().splitlines() if x]
    hack = [(int(r["step"]), float(r["hack_s"])) for r in rows if r["hack_s"] is not None]
    return Run(path, cfg, arm_label(cfg), int(cfg.trainer.seed), snapshots.load_all(path), hack)


def _diag_part(m: AntiPaSTOLinear, A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """diag(Uᵀ B A Vhᵀ) [r] without forming the [d_out, d_in] product."""
    return ((m.U.float().T @ B.float()) * (m.Vh.float() @ A.float().T)).sum(1).cpu()


def cumulative(run: Run, target: str, i: int, modules: dict[str, AntiPaSTOLinear]) -> dict[str, torch.Tensor]:
    """name -> [r]: the target's value at snapshot i minus at snapshot 0."""
    a, b = run.snaps[0], run.snaps[i]
    if target == "route2_quarantine":
        if not b.B_q:
            return {}
        return {
            n: _diag_part(modules[n], b.A_q[n], b.B_q[n]) - _diag_part(modules[n], a.A_q[n], a.B_q[n]) for n in b.B_q
        }
    return {n: getattr(b, target)[n] - getattr(a, target)[n] for n in getattr(b, target)}


@dataclass
class Result:
    run: str
    arm: str
    seed: int
    target: str
    basis: str
    kind: str
    rank: str
    w: dict[str, Score]  # family | COMBINED -> R_w
    act: dict[str, Score]  # family | COMBINED -> R_act
    toward: float  # score.toward_share of Δ (meaningful for oriented bases: hack detectors, solve, shuffled)


@dataclass
class Trajectory:
    run: str
    arm: str
    seed: int
    steps: list[int] = field(default_factory=list)
    r_w: list[float] = field(default_factory=list)  # v_hack (as used), combined, on the cumulative delta_s
    null_mean: list[float] = field(default_factory=list)
    null_std: list[float] = field(default_factory=list)
    hack_s: list[tuple[int, float]] = field(default_factory=list)


def analyse_run(run: Run, model_bases: list[Basis], X_act: dict[str, torch.Tensor],
                modules: dict[str, AntiPaSTOLinear], n_null: int, progress=None) -> tuple[list[Result], Trajectory, list[Basis]]:  # fmt: skip
    """Score every basis on every nonzero target of one run. Returns (results, v_hack trajectory, run bases)."""
    last = len(run.snaps) - 1
    k = int(run.cfg.vhack.k)
    results, used_bases = [], []
    for target in TARGETS:
        delta = cumulative(run, target, last, modules)
        if not delta or all(float(d.abs().max()) == 0 for d in delta.values()):
            continue  # this arm does not train that target
        quarter = [cumulative(run, target, i, modules) for i, s in enumerate(run.snaps)
                   if 0 < s.step <= run.snaps[-1].step / 4]  # fmt: skip
        bases = list(model_bases)
        early = early_basis(quarter, k) if quarter else {}
        if early:
            steps = [s.step for s in run.snaps if 0 < s.step <= run.snaps[-1].step / 4]
            bases.append(Basis("early (first quarter)", Kind.data, early,
                               f"top-{k} directions of the cumulative deltas at snapshot steps {steps} (<= 1/4 of the run); "
                               f"Δ contains that early part, so this is partly circular"))  # fmt: skip
        earlier = [cumulative(run, target, i, modules) for i in range(last - 1, 0, -1)]
        bases.append(Basis("ceiling", Kind.ceiling, ceiling_basis(delta, earlier, k),
                           f"Δ̂ then the earlier snapshots' deltas, orthonormalised, rank {k}: captures all of Δ"))  # fmt: skip
        for b in bases:
            v = {n: t for n, t in b.v.items() if n in delta}
            results.append(Result(str(run.path), run.arm, run.seed, target, b.name, b.kind.value, b.rank,
                                  score(v, delta, n_null, b.name), score(b.v, X_act, n_null, b.name),
                                  toward_share(v, delta)))  # fmt: skip
            if progress is not None:
                progress.update(1)
        if target == "delta_s":
            used_bases = bases
    used = next(b for b in model_bases if b.name == VHACK_USED)
    traj = Trajectory(str(run.path), run.arm, run.seed, hack_s=run.hack_s)
    for i in range(1, last + 1):
        d = cumulative(run, "delta_s", i, modules)
        if all(float(x.abs().max()) == 0 for x in d.values()):
            continue
        s = score({n: t for n, t in used.v.items() if n in d}, d, n_null, VHACK_USED)[COMBINED]
        traj.steps.append(run.snaps[i].step)
        traj.r_w.append(s.value)
        traj.null_mean.append(s.null_mean)
        traj.null_std.append(s.null_std)
    return results, traj, used_bases
