"""Candidate bases in δS space, built WITHOUT looking at the delta they are scored on (except the data-driven
`early` basis and the `ceiling`), plus the held-out (hack − clean) gradient differences R_act is scored on.

All model-side work reuses the project's extraction: vhack.make_pairs / per_completion_grads / extract / select /
get_v_hack / random_control and route2.grad_directions, on the run's base model (knobs zero), with the run's
vhack config. Held-out pairs for R_act: the real (hack, clean) pairs of the LAST `HELDOUT_PROBLEMS` train problems
(every vhack.mode), disjoint by problem from every pair set a basis is built from (checked).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from enum import Enum

import torch

from projected_grpo import vhack as vhack_mod
from projected_grpo.config import VSource
from projected_grpo.env.completions import Pair, contrastive_pairs, honest, wrong
from projected_grpo.env.prompts import render_prompt
from projected_grpo.modes import parse_modes
from projected_grpo.route2 import grad_directions, mask_pairs

HELDOUT_PROBLEMS = 6  # train problems whose pairs only score R_act
K_SWEEP = (1, 5, 12)  # v_hack at these k (top-k rows per module, no noise floor)


class Kind(str, Enum):
    hack = "hack detector"
    control = "control"
    solve = "solve"
    data = "data-driven"
    ceiling = "ceiling"


@dataclass
class Basis:
    name: str
    kind: Kind
    v: dict[str, torch.Tensor]  # module -> [k, r] orthonormal rows (cpu float32)
    how: str  # one line: how it was built

    @property
    def rank(self) -> str:
        """The rows per module: 'k' when uniform, else 'kmin-kmax'."""
        ks = sorted({int(t.shape[0]) for t in self.v.values()})
        return str(ks[0]) if len(ks) == 1 else f"{ks[0]}-{ks[-1]}"


class BasisError(ValueError):
    """A candidate basis that cannot be built as specified; says how to fix it."""


def _cpu(v: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {n: t.detach().float().cpu() for n, t in v.items() if t.shape[0] > 0}


def _with_source(cfg, source: VSource):
    c = copy.deepcopy(cfg)
    c.vhack.source = source
    return c


def heldout_pairs(vcfg, problems) -> tuple[list, set[str]]:
    """The R_act pairs (real hack vs clean, every vhack.mode, the last HELDOUT_PROBLEMS train problems) and their
    problem ids."""
    train = [p for p in problems if p.split == "train"]
    if len(train) <= HELDOUT_PROBLEMS:
        raise BasisError(f"R_act needs more than {HELDOUT_PROBLEMS} train problems; found {len(train)}")
    held = train[-HELDOUT_PROBLEMS:]
    return contrastive_pairs(held, parse_modes(vcfg.modes), kind="hack"), {p.id for p in held}


def _disjoint(name: str, pairs: list, held_ids: set[str]) -> list:
    leak = sorted({p.problem_id for p in pairs} & held_ids)
    if leak:
        raise BasisError(
            f"basis {name!r} is built from pairs of the R_act held-out problems {leak[:3]}; lower vhack.n_pairs "
            f"(or add problems) so the first pairs stop before the last {HELDOUT_PROBLEMS} train problems"
        )
    return pairs


def diffs(G: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per-completion grads (rows 2i, 2i+1) -> name -> [n_pairs, r] first − second of each pair."""
    return {n: (g[0::2] - g[1::2]).double().cpu() for n, g in G.items()}


def model_bases(cfg, model, tok, problems, cache_dir) -> tuple[list[Basis], dict[str, torch.Tensor]]:
    """The run-independent candidate bases for (cfg, base model) and the R_act vectors name -> [n, r]."""
    v = cfg.vhack
    k, floor, top_k, tau = int(v.k), float(v.drop_bottom_frac), int(v.extract_top_k), float(v.tau_axis)
    held, held_ids = heldout_pairs(v, problems)
    out: list[Basis] = []

    used = vhack_mod.get_v_hack(cfg, model, tok, problems, cache_dir)  # loads the run's cached file (or extracts)
    train_pairs, _ = vhack_mod.make_pairs(v, problems, VSource.real)
    _disjoint("v_hack", train_pairs, held_ids)
    out.append(Basis("v_hack (as used)", Kind.hack if used.source != VSource.random.value else Kind.control,
                     _cpu(used.v), f"the run's v_hack: source={used.source}, k={k}, drop_bottom_frac={floor}"))  # fmt: skip
    real = vhack_mod.get_v_hack(_with_source(cfg, VSource.real), model, tok, problems, cache_dir)
    _, V, S = vhack_mod.read_v_hack(real.path)
    for kk in K_SWEEP:
        if kk <= min(int(t.shape[0]) for t in V.values()):
            out.append(Basis(f"v_hack k={kk}", Kind.hack, _cpu(vhack_mod.select(V, S, kk, 0.0).v),
                             f"real v_hack file, top {kk} rows per module, no noise floor"))  # fmt: skip
    out.append(Basis("random (one draw)", Kind.control, _cpu(vhack_mod.random_control(real, int(v.seed) + 1).v),
                     "vhack.random_control of the real v_hack: seeded random orthonormal rows, same row counts"))  # fmt: skip
    for src in (VSource.shuffled, VSource.nonhack):
        c = _with_source(cfg, src)
        _disjoint(src.value, vhack_mod.make_pairs(c.vhack, problems, src)[0], held_ids)
        vh = vhack_mod.get_v_hack(c, model, tok, problems, cache_dir)
        note = " (same subspace as real: swapping pairs negates rows of D)" if src == VSource.shuffled else ""
        out.append(Basis(f"v_hack {src.value}", Kind.control, _cpu(vh.v),
                         f"vhack.source={src.value}, k={k}, drop_bottom_frac={floor}{note}"))  # fmt: skip

    not_held = [p for p in problems if p.split == "train" and p.id not in held_ids]
    n_pairs = int(v.n_pairs) or len(not_held)
    for mode in parse_modes(v.modes):
        pairs = contrastive_pairs(not_held, [mode], kind="hack")[:n_pairs]
        kk = min(k, len(pairs))
        Vm, Sm = vhack_mod.extract(model, tok, pairs, top_k, tau)
        out.append(Basis(f"V mode={mode.value}", Kind.hack, _cpu(vhack_mod.select(Vm, Sm, kk, 0.0).v),
                         f"extracted from {len(pairs)} {mode.value} pairs alone, top {kk} rows, no floor"))  # fmt: skip
    out.append(Basis("route2 v_grad", Kind.hack,
                     _cpu({n: t[None] for n, t in grad_directions(model, tok, mask_pairs(v, problems)).items()
                           if float(t.norm()) > 0}),
                     "route2 mask=grad direction: unit mean of g_hack − g_clean over the v_hack pairs (rank 1)"))  # fmt: skip
    solve = [Pair(render_prompt(p, p.mode), honest(p, 0), wrong(p, 0), p.mode, p.id) for p in not_held][:n_pairs]
    Vs, Ss = vhack_mod.extract(model, tok, solve, top_k, tau)
    out.append(Basis("solve", Kind.solve, _cpu(vhack_mod.select(Vs, Ss, min(k, len(solve)), 0.0).v),
                     f"extracted from {len(solve)} (honest, wrong) pairs, oriented honest-ward, top {k} rows"))  # fmt: skip
    X_act = diffs(vhack_mod.per_completion_grads(model, tok, held))
    return out, X_act


def early_basis(quarter: list[dict[str, torch.Tensor]], k: int) -> dict[str, torch.Tensor]:
    """Top-k right singular vectors of the stacked cumulative deltas [n_snap, r] of the run's first quarter."""
    out = {}
    for m in quarter[0]:
        D = torch.stack([q[m].double() for q in quarter])  # [n_snap, r]
        if float(D.abs().sum()) == 0:
            continue
        _, S, Vh = torch.linalg.svd(D, full_matrices=False)
        keep = int((S > S[0] * 1e-6).sum().clamp(max=k))
        out[m] = Vh[:keep].float().contiguous()
    return out
