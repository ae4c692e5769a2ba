"""v_hack controls derived at load time (random: a seeded orthonormal basis with the real row counts) and the
held-out check of a basis (cin on held-out pairs next to the random-basis null)."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import torch

from projected_grpo.config import VSource
from projected_grpo.projection import cin, cin_null
from projected_grpo.vhack.store import VHack

# ---------------------------------------------------------------------------------------------------
# Random control


def random_orthonormal(k: int, r: int, seed: int, name: str) -> torch.Tensor:
    """[k, r] orthonormal rows: QR of a Gaussian seeded by (seed, module name), independent of module order."""
    s = int(hashlib.sha256(f"{seed}|{name}".encode()).hexdigest()[:15], 16)
    g = torch.randn(r, k, generator=torch.Generator().manual_seed(s), dtype=torch.float64)  # [r, k]
    Q, _ = torch.linalg.qr(g)  # [r, k]
    return Q.T.float().contiguous()


def random_control(vh: VHack, seed: int) -> VHack:
    """The random control: same modules and row counts as `vh`, random orthonormal rows."""
    v = {n: random_orthonormal(t.shape[0], t.shape[1], seed, n).to(t.device) for n, t in vh.v.items()}
    return replace(vh, v=v, source=VSource.random.value)


# ---------------------------------------------------------------------------------------------------
# Validation on held-out pairs


def heldout_report(vh: VHack, G: dict[str, torch.Tensor], seed: int = 0, n_random: int = 8) -> dict:
    """G: name -> [2n, r] held-out per-completion grads. Mean over pairs of cin(v, hack − clean), next to the
    analytic random-basis null E≈sqrt(k/(2r)) (relu), sqrt(k/r) (no relu) and an empirical random-V cin."""
    n = next(iter(G.values())).shape[0] // 2
    D = [{name: (G[name][2 * i] - G[name][2 * i + 1]).to(t) for name, t in vh.v.items()} for i in range(n)]
    rand = [random_control(vh, seed + 1000 + j).v for j in range(n_random)]

    def mean(xs):
        return sum(xs) / max(len(xs), 1)

    null = mean([cin_null(vh.v, d) for d in D])
    return {
        "n_heldout": n,
        "cin": mean([cin(vh.v, d) for d in D]),
        "cin_null_relu": null,  # sqrt(k/(2r)), ||g||²-weighted over modules
        "cin_null_norelu": null * 2**0.5,  # sqrt(k/r)
        "cin_random_empirical": mean([cin(rv, d) for rv in rand for d in D]),
    }
