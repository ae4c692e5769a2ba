"""The drift diagnostic (logged for every arm): how much the dominant directions of the knob update change
between consecutive windows of training, in δS space.

Definition. Per optimizer step t, module m: Δ_{t,m} = δS_m after the step's updates − δS_m before (all μ updates
of the batch together; δS is the deployed knob, δS_hack not included) [r_m]. Window j holds the W steps
(j-1)W+1 .. jW (W = trainer.drift_window); per module M_{j,m} = [Δ_{t,m}]_{t in window j} [W, r_m], and
Q_{j,m} [q, r_m] = its top q = trainer.drift_k right singular vectors (directions with a zero singular value are
left out). The canonical correlations of span(Q_{j-1,m}) and span(Q_{j,m}) are the singular values of
Q_{j-1,m} Q_{j,m}ᵀ (the cosines of the principal angles), each in [0, 1].

    drift_cc_j = mean over modules m (with directions in both windows) of mean_i σ_i(Q_{j-1,m} Q_{j,m}ᵀ)

is logged at the last step of every window from the second on (None at the other steps): 1 = the update keeps
the same dominant directions, ~0 = orthogonal ones (for random q-dim subspaces of R^r, about sqrt(q/r) or less).
The paper's reading: hacking shows up as drift (a drop) of these directions between checkpoints."""

from __future__ import annotations

import torch


def top_directions(M: torch.Tensor, q: int) -> torch.Tensor:
    """M [W, r] -> [q', r] orthonormal rows: the top q right singular vectors with a nonzero singular value."""
    _, S, Vh = torch.linalg.svd(M.double(), full_matrices=False)
    keep = S[:q] > 1e-12 * max(float(S[0]), 1e-300) if S.numel() else S[:0].bool()
    return Vh[:q][keep]


def mean_canonical_correlation(A: torch.Tensor, B: torch.Tensor) -> float:
    """A [a, r], B [b, r] orthonormal rows -> the mean of the singular values of A Bᵀ (min(a, b) of them)."""
    return float(torch.linalg.svdvals(A.double() @ B.double().T).mean())


class DriftTracker:
    """Accumulates per-step δS updates; `add` returns drift_cc at the end of a window (None otherwise)."""

    def __init__(self, window: int, q: int):
        self.window, self.q = window, q
        self.buf: dict[str, list[torch.Tensor]] = {}
        self.prev: dict[str, torch.Tensor] | None = None

    def add(self, update: dict[str, torch.Tensor]) -> float | None:
        """update: name -> Δ [r] of one optimizer step."""
        if self.window == 0:
            return None
        for n, d in update.items():
            self.buf.setdefault(n, []).append(d.detach().double().cpu())
        if len(next(iter(self.buf.values()))) < self.window:
            return None
        cur = {n: top_directions(torch.stack(ds), self.q) for n, ds in self.buf.items()}
        self.buf = {}
        prev, self.prev = self.prev, cur
        if prev is None:
            return None
        vals = [mean_canonical_correlation(prev[n], cur[n]) for n in cur if n in prev and len(prev[n]) and len(cur[n])]
        return sum(vals) / len(vals) if vals else None

    def state_dict(self) -> dict:
        return {"buf": {n: torch.stack(ds) for n, ds in self.buf.items()},
                "prev": dict(self.prev) if self.prev is not None else None}  # fmt: skip

    def load_state_dict(self, state: dict | None) -> None:
        if state is None:
            return
        self.buf = {n: list(t.unbind(0)) for n, t in state["buf"].items()}
        self.prev = state["prev"]
