"""route2's quarantine: a zero-init LoRA pair (B_q A_q) next to each module's δS path, with the hook where a
token mask detaches the δS path's output for flagged tokens."""

from __future__ import annotations

import hashlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from projected_grpo.adapter import adapter_modules


class Route2Error(ValueError):
    """A route2 setup that cannot work; says how to fix it."""


def _seed(seed: int, name: str) -> int:
    return int(hashlib.sha256(f"route2|{seed}|{name}".encode()).hexdigest()[:15], 16)


def unit(v: torch.Tensor) -> torch.Tensor:
    """v / ||v|| (zeros stay zeros: nothing is ever flagged along a zero direction)."""
    n = v.norm()
    return v / n if n > 0 else torch.zeros_like(v)


# ---------------------------------------------------------------------------------------------------
# The quarantine adapter


class Quarantine(nn.Module):
    """B_q A_q x, plus the activation mask of the δS path (mask=act). Attached as AntiPaSTOLinear.quarantine."""

    def __init__(self, d_in: int, d_out: int, rank: int, seed: int, name: str, device, l1: float = 0.0):
        super().__init__()
        g = torch.Generator().manual_seed(_seed(seed, name))
        A = torch.randn(rank, d_in, generator=g) / math.sqrt(d_in)  # [r_q, d_in]
        self.A_q = nn.Parameter(A.to(device))
        self.B_q = nn.Parameter(torch.zeros(d_out, rank, device=device))  # [d_out, r_q]
        self.l1 = l1
        self.masking = False  # the act mask applies only inside Route2.masking() (the train loss backward)
        self.v_act: torch.Tensor | None = None  # [d_in]
        self.act_mean = 0.0  # μ of the clean completion tokens' projection on v_act
        self.act_std = 1.0  # σ of the same
        self.act_threshold = math.inf
        self.flags: torch.Tensor | None = None  # [B, T] bool, of the last masked forward
        self.l1_rows: torch.Tensor | None = None  # [B, T] ||B_q A_q x||_1 on a detached x, of the last forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., d_in] -> [..., d_out]."""
        out = F.linear(F.linear(x, self.A_q.to(x.dtype)), self.B_q.to(x.dtype))
        if self.l1 > 0 and torch.is_grad_enabled():  # the penalty trains the quarantine only, never δS upstream
            xd = x.detach()
            self.l1_rows = F.linear(F.linear(xd, self.A_q.to(x.dtype)), self.B_q.to(x.dtype)).float().abs().sum(-1)
        return out

    def flag(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., d_in] -> [...] bool: the token's activation lies act_threshold clean-stds past the clean mean."""
        p = x.detach().float() @ self.v_act  # [...]
        return (p - self.act_mean) > self.act_threshold * self.act_std

    def route(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """z [..., r] of the δS path -> the same values, detached on flagged tokens (mask=act, training only)."""
        if not self.masking or self.v_act is None or not z.requires_grad:
            return z
        flag = self.flag(x)  # [...]
        self.flags = flag
        return torch.where(flag[..., None], z.detach(), z)

    def weight_delta(self) -> torch.Tensor:
        return self.B_q.float() @ self.A_q.float()  # [d_out, d_in]

    def norm(self) -> float:
        """||B_q A_q||_F via tr((B_qᵀB_q)(A_q A_qᵀ)), without forming the [d_out, d_in] product."""
        B, A = self.B_q.detach().float(), self.A_q.detach().float()
        return float(((B.T @ B) * (A @ A.T)).sum().clamp(min=0).sqrt())


def attach(model: nn.Module, rank: int, seed: int, l1: float = 0.0) -> dict[str, Quarantine]:
    """Add a Quarantine to every AntiPaSTOLinear (B_q = 0: the model is unchanged). Returns name -> Quarantine."""
    mods = adapter_modules(model)
    if not mods:
        raise Route2Error("the model has no AntiPaSTO modules; wrap it first (adapter.wrap_model)")
    out = {}
    for name, m in mods.items():
        if m.quarantine is not None:
            raise Route2Error(f"module {name} already has a quarantine; attach once per model")
        dev = m.weight.device
        m.quarantine = Quarantine(m.in_features, m.out_features, rank, seed, name, dev, l1)
        out[name] = m.quarantine
    return out


def quarantines(model: nn.Module) -> dict[str, Quarantine]:
    return {n: m.quarantine for n, m in adapter_modules(model).items() if m.quarantine is not None}
