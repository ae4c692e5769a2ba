"""Scores of a candidate basis against vectors in δS space: the ratio to chance, a random null, the ceiling.

Per wrapped module m a basis is V_m [k_m, r_m] (orthonormal rows; a module the basis lacks counts as k_m = 0)
and the scored vectors are X_m [n, r_m] (n = 1 for the learned delta Δ, n = held-out pairs for R_act).
Per family f (the module-name suffix: q_proj, k_proj, ..., down_proj) and sample s:

    ratio_fs = Σ_{m∈f} ||V_m x_ms||²  /  Σ_{m∈f} (k_m / r_m) ||x_ms||²            (1.0 = chance)

i.e. the captured share of the family's squared norm over its expectation under a random basis of the same
ranks; the family score is the mean over samples. `combined` = the mean over families, each family weighted
equally, so a family with many or large modules does not dominate (the v7 fix). Modules with k_m = 0 drop out of
numerator and chance alike; a family with no basis rows has no score.

Null: N random orthonormal bases with the same k_m per module (QR of a Gaussian, seeded per (module, k_m), so
every basis of those ranks meets the same null), scored the same way -> null mean, std and z.

Ceiling: the best any basis with these ranks can do. Per sample the captured share is at most 1 (a basis
containing x̂_ms captures all of it), so
    ceiling_f = mean_s Σ_{m∈f, k_m>0} ||x_ms||²  /  Σ_{m∈f} (k_m / r_m) ||x_ms||²
bounds ratio_f term by term; combined ceiling = the mean of the family ceilings, which bounds the combined
score. For one vector (R_w on Δ) it is attained exactly by the Δ-aligned basis, and ratio / ceiling is then the
fraction of Δ's (per-family, equally weighted) squared norm the basis captures.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from functools import lru_cache

import torch

COMBINED = "combined"
ORTHO_TOL = 1e-3


class ScoreError(ValueError):
    """Scoring inputs that do not fit (non-orthonormal basis, mismatched shapes); says how to fix it."""


def family(name: str) -> str:
    """The tensor family of a module: its name's last component (q_proj, up_proj, ...)."""
    return name.rsplit(".", 1)[-1]


def check_orthonormal(v: dict[str, torch.Tensor], what: str) -> None:
    for n, V in v.items():
        k = V.shape[0]
        err = float((V.double() @ V.double().T - torch.eye(k, dtype=torch.float64)).abs().max()) if k else 0.0
        if err > ORTHO_TOL:
            raise ScoreError(
                f"basis {what!r}, module {n}: rows are not orthonormal (max |V Vᵀ − I| = {err:.3g} > {ORTHO_TOL}); "
                f"orthonormalise it (torch.linalg.qr) before scoring"
            )


@lru_cache(maxsize=4096)
def random_bases(name: str, k: int, r: int, n_draws: int) -> torch.Tensor:
    """[n_draws, k, r] float64 random orthonormal rows (QR of a Gaussian), seeded by (module name, k): the same
    draws on every call, for every basis of that rank in that module."""
    seed = int(hashlib.sha256(f"hypotheses-null|{name}|{k}".encode()).hexdigest()[:15], 16)
    g = torch.randn(n_draws, r, k, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    Q, _ = torch.linalg.qr(g)  # [N, r, k]
    return Q.transpose(1, 2).contiguous()


def _family_ratios(
    captured: dict[str, torch.Tensor], chance: dict[str, torch.Tensor], total: dict[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """captured[m]: [..., n]; chance[m], total[m]: [n] -> family -> [...] (mean over samples of the ratio).
    With `total` given, the ratio is total/chance over modules with k_m > 0 (the ceiling) instead."""
    fams: dict[str, list[str]] = {}
    for m in captured:
        fams.setdefault(family(m), []).append(m)
    out = {}
    for f, names in sorted(fams.items()):
        ch = sum(chance[m] for m in names)  # [n]
        ok = ch > 0
        if not bool(ok.any()):
            continue  # the basis has no rows in this family (or the vectors are zero there)
        num = sum(total[m] for m in names) if total is not None else sum(captured[m] for m in names)
        out[f] = (num[..., ok] / ch[ok]).mean(-1)
    return out


def _with_combined(fr: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if not fr:
        raise ScoreError("no family has both basis rows and a nonzero vector; nothing to score")
    return {**fr, COMBINED: torch.stack(list(fr.values())).mean(0)}


@dataclass
class Score:
    value: float
    null_mean: float
    null_std: float
    ceiling: float
    n_null: int

    @property
    def z(self) -> float:
        return (self.value - self.null_mean) / self.null_std if self.null_std > 0 else math.nan

    @property
    def of_ceiling(self) -> float:
        return self.value / self.ceiling if self.ceiling > 0 else math.nan

    @property
    def null_sem(self) -> float:
        """The standard error of the null mean: shrinks as 1/sqrt(n_null)."""
        return self.null_std / math.sqrt(self.n_null)


def score(v: dict[str, torch.Tensor], X: dict[str, torch.Tensor], n_null: int, what: str = "basis") -> dict[str, Score]:
    """v: name -> [k, r] orthonormal rows (modules of X missing from v count as k = 0); X: name -> [n, r] or [r].
    -> family (and COMBINED) -> Score."""
    if n_null < 2:
        raise ScoreError(f"n_null={n_null}: the null needs >= 2 draws for a std (use >= 100)")
    extra = sorted(set(v) - set(X))
    if extra:
        raise ScoreError(f"basis {what!r} has modules the scored vectors lack: {extra[:3]}")
    check_orthonormal(v, what)
    captured, chance, total, null_cap = {}, {}, {}, {}
    for m, x in X.items():
        x = x.double().reshape(-1, x.shape[-1])  # [n, r]
        r = x.shape[1]
        V = v.get(m, torch.zeros(0, r)).double()  # [k, r]
        if V.shape[1] != r:
            raise ScoreError(f"basis {what!r}, module {m}: rows of width {V.shape[1]}, the vectors have r={r}")
        k = V.shape[0]
        total[m] = x.pow(2).sum(1) if k else torch.zeros(x.shape[0], dtype=torch.float64)  # [n]
        chance[m] = k / r * x.pow(2).sum(1)  # [n]
        captured[m] = (x @ V.T).pow(2).sum(1)  # [n]
        Q = random_bases(m, k, r, n_null) if k else torch.zeros(n_null, 0, r, dtype=torch.float64)  # [N, k, r]
        null_cap[m] = (Q @ x.T).pow(2).sum(1)  # [N, n]
    real = _with_combined(_family_ratios(captured, chance))
    null = _with_combined(_family_ratios(null_cap, chance))
    ceil = _with_combined(_family_ratios(captured, chance, total))
    return {f: Score(float(real[f]), float(null[f].mean()), float(null[f].std()), float(ceil[f]), n_null) for f in real}


def ceiling_basis(
    delta: dict[str, torch.Tensor], extra: list[dict[str, torch.Tensor]], k: int, seed: int = 0
) -> dict[str, torch.Tensor]:
    """The rank-k ceiling basis per module: Δ̂ first, then the `extra` directions (e.g. the trajectory's earlier
    deltas) Gram-Schmidt-orthogonalised, then seeded random directions if those run out. name -> [k, r]."""
    out = {}
    for m, d in delta.items():
        r = d.shape[-1]
        kk = min(k, r)
        g = torch.Generator().manual_seed(int(hashlib.sha256(f"ceiling|{seed}|{m}".encode()).hexdigest()[:15], 16))
        cols = (
            [d.double()] + [e[m].double() for e in extra] + list(torch.randn(kk, r, generator=g, dtype=torch.float64))
        )
        Q, _ = torch.linalg.qr(torch.stack(cols, 1))  # [r, n_cols] Householder: orthonormal whatever the rank
        out[m] = Q[:, :kk].T.float().contiguous()
    return out


def toward_share(v: dict[str, torch.Tensor], delta: dict[str, torch.Tensor]) -> float:
    """Of the squared mass of Δ a basis captures (pooled over modules), the share with V Δ < 0: for a basis oriented
    like v_hack (c = V g > 0 means descending g lowers the hack's NLL relative to the clean one's) and an update
    Δ ≈ −lr g, the share that moved hack-ward. 0.5 when the basis' orientation is unrelated to Δ's sign."""
    neg = tot = 0.0
    for m, V in v.items():
        c = V.double() @ delta[m].double().reshape(-1)  # [k]
        neg += float(c.clamp(max=0).pow(2).sum())
        tot += float(c.pow(2).sum())
    return neg / tot if tot > 0 else math.nan
