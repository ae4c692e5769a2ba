"""The per-run router of projection=route2: builds and refreshes the mask, hooks the backward (per-rollout groups,
the act mask, the quarantine's L1), withholds hack-ward δS gradient, and reports the flag metrics."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from projected_grpo.adapter import AntiPaSTOLinear, adapter_modules, deployed
from projected_grpo.config import Route2Mask, VSource
from projected_grpo.route2.masks import (
    FlagStats,
    act_directions,
    grad_directions,
    mask_pairs,
    overlap,
    random_directions,
)
from projected_grpo.route2.quarantine import Route2Error, attach

# ---------------------------------------------------------------------------------------------------
# The per-run router


class Route2:
    """Owns the quarantines and the mask of one run. The train loop calls, per step:
    begin_step; per prompt: group_columns (grad), forward under masking(), record (act), l1_penalty;
    after_backward (grad); withhold (after the cin measurement, before clipping); metrics."""

    def __init__(self, rcfg, vcfg, model, tok, problems):
        self.mask = Route2Mask(getattr(rcfg.mask, "value", rcfg.mask))
        self.rcfg, self.vcfg, self.model, self.tok, self.problems = rcfg, vcfg, model, tok, problems
        self.q = attach(model, int(rcfg.rank), int(rcfg.seed), float(rcfg.l1))
        self.modules = adapter_modules(model)
        self.v: dict[str, torch.Tensor] = {}  # name -> v_grad [r] | v_act [d_in]
        self.mask_overlap: float | None = None
        self.stats = FlagStats()
        self.rollout_grads: dict[str, torch.Tensor] = {}  # name -> [P*G, r] per-rollout δS gradients (grad)
        self.set_mask(self.build())

    def parameters(self) -> list[nn.Parameter]:
        return [p for q in self.q.values() for p in (q.A_q, q.B_q)]

    # -- the mask --------------------------------------------------------------------------------

    def build(self) -> dict:
        """Extract the mask from the current model (the caller ablates the quarantine where it matters)."""
        random = VSource(self.vcfg.source) == VSource.random
        if random and self.mask == Route2Mask.grad:
            return random_directions({n: m.r for n, m in self.modules.items()}, int(self.vcfg.seed))
        pairs = mask_pairs(self.vcfg, self.problems)
        if self.mask == Route2Mask.grad:
            return grad_directions(self.model, self.tok, pairs)
        dev = {n: m.weight.device for n, m in self.modules.items()}
        v = None
        if random:  # random control: a random direction, calibrated on the clean tokens like the real one
            v = {n: t.to(dev[n]) for n, t in random_directions({n: m.in_features for n, m in self.modules.items()},
                                                               int(self.vcfg.seed)).items()}  # fmt: skip
        return act_directions(self.model, self.tok, pairs, v=v)

    def set_mask(self, built: dict) -> None:
        if self.mask == Route2Mask.grad:
            self.v = {n: t.to(self.modules[n].weight.device) for n, t in built.items()}
            return
        for n, (v, mu, sd) in built.items():
            q = self.q[n]
            q.v_act, q.act_mean, q.act_std = v.to(q.B_q.device), mu, sd
            q.act_threshold = float(self.rcfg.act_threshold)
        self.v = {n: q.v_act for n, q in self.q.items()}

    def refresh(self) -> float:
        """Re-extract the mask from the current model with the quarantine (and delta_s_hack) ablated;
        the quarantine's values are untouched. Returns (and logs) the overlap with the old mask."""
        old = {n: t.detach().clone() for n, t in self.v.items()}
        with deployed(self.model):
            built = self.build()
        self.set_mask(built)
        self.mask_overlap = overlap(old, self.v)
        return self.mask_overlap

    # -- per step --------------------------------------------------------------------------------

    def begin_step(self) -> None:
        self.stats = FlagStats()
        self.rollout_grads = {}

    @contextmanager
    def masking(self) -> Iterator[None]:
        """The act mask applies to forwards inside this context (the GRPO loss), never to extraction or eval."""
        on = self.mask == Route2Mask.act
        for q in self.q.values():
            q.masking, q.flags = on, None
        try:
            yield
        finally:
            for q in self.q.values():
                q.masking, q.flags = False, None

    def group_columns(self, onehot: torch.Tensor, prompt: int, n_prompts: int) -> torch.Tensor:
        """onehot [G, 2] (student/teacher) -> [G, 2 + P*G] with one extra group per rollout (mask=grad)."""
        if self.mask != Route2Mask.grad:
            return onehot
        G = onehot.shape[0]
        cols = torch.zeros(G, n_prompts * G)
        cols[:, prompt * G : (prompt + 1) * G] = torch.eye(G)
        return torch.cat([onehot, cols], 1)

    def record(self, cmask: torch.Tensor, is_teacher: list[bool], exploited: list[bool]) -> None:
        """mask=act: count the flagged completion tokens of the last forward, per module (diagnostics only)."""
        if self.mask != Route2Mask.act:
            return
        c = cmask.bool()  # [G, T]
        for n, q in self.q.items():
            if q.flags is None:
                raise Route2Error(
                    f"route2 mask=act: module {n} produced no flags; was the forward run under masking()?"
                )
            self.stats.add((q.flags & c).sum(1), c.sum(1), is_teacher, exploited)
            q.flags = None

    def l1_penalty(self, cmask: torch.Tensor) -> torch.Tensor | float:
        """l1 · Σ_modules mean over completion tokens of ||B_q A_q x||_1 of the last forward (0 when l1 = 0)."""
        l1 = float(self.rcfg.l1)
        if l1 == 0:
            return 0.0
        m = cmask.float()  # [G, T]
        total = 0.0
        for q in self.q.values():
            if q.l1_rows is None:
                raise Route2Error("route2 l1: no quarantine output recorded; call l1_penalty right after the forward")
            total = total + (q.l1_rows * m).sum() / m.sum().clamp(min=1)
            q.l1_rows = None
        return l1 * total

    def after_backward(self, grads: dict[str, torch.Tensor], rollouts) -> None:
        """mask=grad: keep the per-rollout δS gradients (columns 2: of the store) and count flagged rollouts."""
        if self.mask != Route2Mask.grad:
            return
        self.rollout_grads = {n: g[2:] for n, g in grads.items()}  # [P*G, r]
        is_teacher = [te for r in rollouts for te in r.is_teacher]
        exploited = [ex for r in rollouts for ex in r.exploited]  # oracle: logging only
        for n, g in self.rollout_grads.items():
            active = (g != 0).any(1)  # rollouts of zero-variance groups had no backward
            fired = (g @ self.v[n].to(g)) > 0
            self.stats.add((fired & active).float(), active.float(), is_teacher, exploited)

    def withhold(self, modules: dict[str, AntiPaSTOLinear]) -> dict[str, torch.Tensor]:
        """mask=grad: delta_s.grad -= Σ_i relu(v_grad·g_i) v_grad per module; returns name -> withheld [r]."""
        out = {}
        if self.mask != Route2Mask.grad:
            return out
        for n, g in self.rollout_grads.items():
            v = self.v[n].to(g)  # [r]
            out[n] = torch.relu(g @ v).sum() * v  # [r]
            m = modules[n]
            m.delta_s.grad = m.delta_s.grad - out[n].to(m.delta_s.grad)
        return out

    def metrics(self) -> dict:
        return {
            **self.stats.fractions(),
            "quarantine_norm": sum(q.norm() for q in self.q.values()),
            "mask_overlap": self.mask_overlap,
        }

    # -- checkpoints -----------------------------------------------------------------------------

    def state_dict(self) -> dict:
        return {
            "quarantine": {n: (q.A_q.detach().clone(), q.B_q.detach().clone()) for n, q in self.q.items()},
            "act": {n: (q.v_act, q.act_mean, q.act_std) for n, q in self.q.items()}
            if self.mask == Route2Mask.act
            else None,
            "v": self.v,
            "mask_overlap": self.mask_overlap,
        }

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            for n, (A, B) in state["quarantine"].items():
                self.q[n].A_q.copy_(A)
                self.q[n].B_q.copy_(B)
        self.set_mask(state["act"] if self.mask == Route2Mask.act else state["v"])
        self.mask_overlap = state["mask_overlap"]
