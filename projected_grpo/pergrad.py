"""Per-example (or per-group) δS gradients from ONE batched forward/backward.

For a wrapped Linear, z = (Vh x) * knob and the loss gradient of one example w.r.t. δS is
    dL_b/dδS = Σ_t h_bt ⊙ (Uᵀ ∂L/∂y_bt) = Σ_t h_bt ⊙ ∂L/∂z_bt        h = Vh x  [B, T, r]
A forward hook keeps h (autograd keeps it anyway) and a tensor hook on z reduces h ⊙ ∂L/∂z over tokens
and over the examples of each group as the backward pass reaches it. On the folded training forward
(adapter._FoldedKnob) the backward itself computes the per-example sums and hands them to the sink `on_knob_grad`
returned at forward time. The group rows are bound at FORWARD time, so one backward may cover forwards of different
batches (the shared-prompt pass: S prompt rows, then G completion rows; set_groups before each). Examples never
interact in a causal LM forward with a padding mask, so the result is exact (== a loop of per-example backwards).
The gradient w.r.t. delta_s_hack is the same tensor (the forward uses delta_s + delta_s_hack).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from projected_grpo.adapter import AntiPaSTOLinear, adapter_modules


class GradStore:
    def __init__(self, group_onehot: torch.Tensor):
        self.onehot = group_onehot  # [B, n_groups]
        self.grads: dict[str, torch.Tensor] = {}  # name -> [n_groups, r] (float32)

    def set_groups(self, groups: torch.Tensor, n_groups: int) -> None:
        """Group ids [B] of the NEXT forward's batch rows (e.g. 0 = student, 1 = teacher)."""
        self.onehot = torch.nn.functional.one_hot(groups.long(), n_groups).float()

    def add(self, name: str, per_ex: torch.Tensor, onehot: torch.Tensor) -> None:
        """per_ex [B, r]: per-example δS gradients of one forward's rows, summed into their groups (onehot
        [B, n_groups], bound when that forward ran)."""
        if onehot.shape[0] != per_ex.shape[0]:
            raise RuntimeError(f"pergrad: {per_ex.shape[0]} example rows in the backward of a forward whose groups "
                               f"were set for {onehot.shape[0]} rows; call set_groups before each forward")  # fmt: skip
        g = onehot.to(per_ex).T @ per_ex  # [n_groups, r]
        self.grads[name] = self.grads[name] + g if name in self.grads else g

    def hook(self, name: str):
        """The unfolded path's forward hook: a tensor hook on z reduces h ⊙ ∂L/∂z when the backward reaches it."""

        def capture(module: AntiPaSTOLinear, h: torch.Tensor, z: torch.Tensor) -> None:
            if not z.requires_grad:
                return
            onehot = self.onehot  # this forward's rows

            def on_grad(dz: torch.Tensor) -> None:
                # h, dz: [B, T, r] (or [B, r]); sum over tokens
                self.add(name, (h.float() * dz.float()).reshape(h.shape[0], -1, h.shape[-1]).sum(1), onehot)  # [B, r]

            z.register_hook(on_grad)

        return capture

    def folded_hook(self, name: str):
        """The folded path: called by adapter._FoldedKnob's forward, returns the sink its backward hands
        per_ex [B, r] to (bound to this forward's rows)."""

        def on_knob_grad(module: AntiPaSTOLinear):
            onehot = self.onehot
            return lambda per_ex: self.add(name, per_ex, onehot)

        return on_knob_grad


@contextmanager
def grouped_grads(model: torch.nn.Module, groups: torch.Tensor | None = None, batch: int | None = None) -> Iterator[GradStore]:
    """Collect δS gradients summed per group (groups: [B] long ids) or per example (groups=None, give batch).

    Usage:  with grouped_grads(model, groups) as store: loss.backward()   ->  store.grads[name]: [n_groups, r]
    """
    if groups is None:
        assert batch is not None, "give groups or batch"
        groups = torch.arange(batch)
    onehot = torch.nn.functional.one_hot(groups.long()).float()  # [B, n_groups]
    store = GradStore(onehot)
    mods = adapter_modules(model)
    try:
        for name, m in mods.items():
            m.capture, m.on_knob_grad = store.hook(name), store.folded_hook(name)
        yield store
    finally:
        for m in mods.values():
            m.capture = m.on_knob_grad = None
