"""AntiPaSTO adapter: each targeted Linear W = U diag(S) Vh gains  U diag(delta_s + delta_s_hack) Vh x.

Only `delta_s` (the main knob) and `delta_s_hack` (the quarantine) train; both start at zero, so the
wrapped model is bit-identical to the base model, and "knobs zeroed" is a free reference model.
Two training forwards, the same function and knob gradient (to float rounding):
  * unfolded: W x + U ((Vh x) * knob), autograd through all three matmuls;
  * folded (`fold_train`, the default via trainer.folded_forward): W' x with W' = W + U diag(knob) Vh (refolded
    only when the knob changed, W itself at knob = 0), and _FoldedKnob's backward computes the knob gradient
    Σ_t (Vh x_t) ⊙ (Uᵀ ∂L/∂y_t) and ∂L/∂x = ∂L/∂y W': 4 matmuls per token instead of 6.
For sampling without gradients the knobs can be folded into W itself (from a kept copy, restored bit-exactly).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from projected_grpo.integrity import load_safetensors, save_safetensors


class AntiPaSTOLinear(nn.Module):
    """y = W x + b + U ((Vh x) * (delta_s + delta_s_hack)).

    Keeps the wrapped Linear's `weight`/`bias` Parameters under the same names, so state-dict keys
    of the base model are unchanged.
    """

    def __init__(self, base: nn.Linear, U: torch.Tensor, S: torch.Tensor, Vh: torch.Tensor):
        super().__init__()
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight  # [d_out, d_in], frozen
        self.bias = base.bias
        dt, dev = base.weight.dtype, base.weight.device
        self.register_buffer("U", U.to(dev, dt), persistent=False)  # [d_out, r]
        self.register_buffer("Vh", Vh.to(dev, dt), persistent=False)  # [r, d_in]
        self.register_buffer("S", S.to(dev, torch.float32), persistent=False)  # [r]
        r = S.numel()
        self.delta_s = nn.Parameter(torch.zeros(r, device=dev, dtype=torch.float32))  # main knob
        self.delta_s_hack = nn.Parameter(torch.zeros(r, device=dev, dtype=torch.float32))  # quarantine
        self.folded = False
        # Optional per-example hooks (pergrad.py): unfolded path, called with (module, h [.., r], z [.., r]) on every
        # forward; folded path, called with (module) on every forward, returning the sink the backward hands
        # per_ex [B, r] = Σ_t h ⊙ ∂L/∂z to.
        self.capture: Callable | None = None
        self.on_knob_grad: Callable | None = None
        self.fold_train = False  # the folded training forward (set_fold_train); route2's quarantine keeps unfolded
        self._wf: torch.Tensor | None = None  # the cached W' [d_out, d_in] of the folded training forward
        self._wf_knob: torch.Tensor | None = None  # the knob W' was folded with [r]
        self._wf_ver: tuple | None = None  # (delta_s, delta_s_hack) in-place versions when W' was last checked
        self._wf_cur: torch.Tensor | None = None  # the weight the folded forward uses now: W', or None = W (knob = 0)
        # projection=route2 only: a route2.Quarantine (B_q A_q x, distinct basis) added to the output
        self.quarantine: nn.Module | None = None

    @property
    def r(self) -> int:
        return self.S.numel()

    def knob(self) -> torch.Tensor:
        return self.delta_s + self.delta_s_hack  # [r]

    def knob_delta(self, knob: torch.Tensor) -> torch.Tensor:
        """U diag(knob) Vh in float32 [d_out, d_in] (the same formula for sampling and the folded forward)."""
        return (self.U.float() * knob.float()) @ self.Vh.float()

    def train_weight(self) -> torch.Tensor:
        """W' = W + U diag(knob) Vh for the folded training forward; W itself (exactly) when the knob is 0 (step 0,
        the reference model). Refolded only when the knob's value changed (in-place versions, then values); a
        knob zeroed and restored (reference_model) finds its W' again."""
        ver = (self.delta_s._version, self.delta_s_hack._version)
        if ver != self._wf_ver:
            k = self.knob().detach()  # [r]
            if not bool(k.any()):
                self._wf_cur = None  # W itself (a Parameter: never stored as a plain attribute)
            else:
                if self._wf_knob is None or not torch.equal(k, self._wf_knob):
                    self._wf = (self.weight.float() + self.knob_delta(k)).to(self.weight.dtype)  # [d_out, d_in]
                    self._wf_knob = k.clone()
                self._wf_cur = self._wf
            self._wf_ver = ver
        return self.weight if self._wf_cur is None else self._wf_cur

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.folded:
            return F.linear(x, self.weight, self.bias)
        if self.fold_train and self.quarantine is None:
            w = self.train_weight()  # [d_out, d_in]
            knob = self.knob()  # [r]
            if torch.is_grad_enabled() and knob.requires_grad:
                return _FoldedKnob.apply(x, knob, w, self)
            return F.linear(x, w, self.bias)
        y = F.linear(x, self.weight, self.bias)
        h = F.linear(x, self.Vh)  # [..., r]
        z = h * self.knob().to(h.dtype)  # [..., r]
        if self.quarantine is not None:  # route2: the act mask may detach z on flagged tokens
            z = self.quarantine.route(x, z)  # same values; the capture below sees the gradient BEFORE the mask
        if self.capture is not None:
            self.capture(self, h, z)
        if self.quarantine is not None:
            return y + F.linear(z, self.U) + self.quarantine(x)
        return y + F.linear(z, self.U)

    @torch.no_grad()
    def fold(self) -> None:
        """W <- W + U diag(knob) Vh, keeping the original W for an exact restore."""
        assert not self.folded, "already folded"
        self._wf = self._wf_knob = self._wf_ver = self._wf_cur = None  # the training W' (stale after a step): freed
        self._w_orig = self.weight.detach().clone()
        delta = self.knob_delta(self.knob())  # [d_out, d_in]
        if self.quarantine is not None:  # route2: sampling sees the quarantine too (zero under deployed())
            delta = delta + self.quarantine.weight_delta()
        self.weight.copy_((self._w_orig.float() + delta).to(self.weight.dtype))
        self.folded = True

    @torch.no_grad()
    def unfold(self) -> None:
        assert self.folded, "not folded"
        self.weight.copy_(self._w_orig)
        del self._w_orig
        self.folded = False

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, r={self.r}"


class _FoldedKnob(torch.autograd.Function):
    """y = W' x + b (W' folded, no gradient); backward: ∂L/∂x = ∂L/∂y W' and the knob gradient
    Σ_t h_t ⊙ dz_t with h = Vh x, dz = Uᵀ ∂L/∂y (float32), per example handed to the sink module.on_knob_grad
    returned when this forward ran."""

    @staticmethod
    def forward(ctx, x, knob, w, module):  # x [..., d_in], knob [r], w [d_out, d_in]
        ctx.module, ctx.w = module, w
        ctx.sink = module.on_knob_grad(module) if module.on_knob_grad is not None else None
        ctx.save_for_backward(F.linear(x, module.Vh))  # h [..., r], as the unfolded path keeps it
        return F.linear(x, w, module.bias)

    @staticmethod
    def backward(ctx, dy):  # dy [..., d_out]
        (h,) = ctx.saved_tensors
        m = ctx.module
        dz = dy.matmul(m.U)  # [..., r] = Uᵀ ∂L/∂y
        per_ex = (h.float() * dz.float()).reshape(h.shape[0], -1, h.shape[-1]).sum(1)  # [B, r]
        if ctx.sink is not None:
            ctx.sink(per_ex)
        dx = dy.matmul(ctx.w) if ctx.needs_input_grad[0] else None  # [..., d_in]
        return dx, per_ex.sum(0), None, None


# ---------------------------------------------------------------------------------------------------
# SVD with an on-disk cache keyed by the weight bytes


def weight_key(w: torch.Tensor) -> str:
    """Hash of a weight's bytes, dtype and shape."""
    h = hashlib.sha256()
    h.update(f"{w.dtype}|{tuple(w.shape)}|".encode())
    h.update(w.detach().contiguous().cpu().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:32]


SVD_DIR = "svd-v2"  # under paths.cache_dir; v2: files carry a content checksum (the old svd/ files are not read)
SVD_KEY = "paths.cache_dir (the SVD cache)"


def svd_cached(w: torch.Tensor, cache_dir: Path | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD of W in float32: U [d_out, r], S [r], Vh [r, d_in]; cached by weight hash (integrity.py:
    checksummed, non-finite values refused)."""
    key = weight_key(w)
    path = Path(cache_dir) / SVD_DIR / f"{key}.safetensors" if cache_dir is not None else None
    if path is not None and path.exists():
        fix = f"Delete it (rm {path}); the next run recomputes it."
        meta, t = load_safetensors(path, SVD_KEY, fix)
        stored = meta.get("weight_key")
        if stored != key:
            raise RuntimeError(
                f"stale SVD cache entry {path} (chosen by {SVD_KEY}): stored weight_key={stored!r}, expected "
                f"{key!r}. The file does not belong to this weight; {fix}"
            )
        return t["U"], t["S"], t["Vh"]
    U, S, Vh = torch.linalg.svd(w.detach().float(), full_matrices=False)
    U, S, Vh = U.cpu(), S.cpu(), Vh.cpu()
    if path is not None:
        save_safetensors(path, {"U": U, "S": S, "Vh": Vh}, {"weight_key": key, "shape": str(tuple(w.shape))})
    return U, S, Vh


# ---------------------------------------------------------------------------------------------------
# Wrapping and the knob contexts


def wrap_model(model: nn.Module, target_suffixes: list[str], cache_dir: Path | None = None) -> list[str]:
    """Wrap every nn.Linear whose name ends in a target suffix; freeze everything but the knobs."""
    for p in model.parameters():
        p.requires_grad_(False)
    targets = [
        (name, mod)
        for name, mod in model.named_modules()
        if isinstance(mod, nn.Linear) and name.split(".")[-1] in set(target_suffixes)
    ]
    if not targets:
        raise ValueError(f"no nn.Linear matches target_suffixes={target_suffixes}; check model.target_suffixes")
    for name, lin in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        U, S, Vh = svd_cached(lin.weight, cache_dir)
        setattr(parent, child, AntiPaSTOLinear(lin, U, S, Vh))
    return [name for name, _ in targets]


def adapter_modules(model: nn.Module) -> dict[str, AntiPaSTOLinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, AntiPaSTOLinear)}


def knob_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    mods = adapter_modules(model).values()
    return [m.delta_s for m in mods], [m.delta_s_hack for m in mods]


def quarantine_parameters(model: nn.Module) -> list[nn.Parameter]:
    """route2's quarantine LoRA factors (A_q, B_q) of every module that has one; [] for the other arms."""
    qs = [m.quarantine for m in adapter_modules(model).values() if m.quarantine is not None]
    return [p for q in qs for p in (q.A_q, q.B_q)]


@contextmanager
def _zeroed(params: list[nn.Parameter]) -> Iterator[None]:
    saved = [p.detach().clone() for p in params]
    try:
        with torch.no_grad():
            for p in params:
                p.zero_()
        yield
    finally:
        with torch.no_grad():
            for p, v in zip(params, saved):
                p.copy_(v)


@contextmanager
def reference_model(model: nn.Module) -> Iterator[None]:
    """The free reference model: both knobs (and route2's quarantine) zeroed, restored on exit (also after an exception)."""
    main, hack = knob_parameters(model)
    with _zeroed(main + hack + quarantine_parameters(model)):
        yield


@contextmanager
def deployed(model: nn.Module) -> Iterator[None]:
    """Deployment: the quarantine (delta_s_hack, and route2's B_q A_q) ablated, restored on exit."""
    _, hack = knob_parameters(model)
    with _zeroed(hack + quarantine_parameters(model)):
        yield


def set_fold_train(model: nn.Module, on: bool) -> None:
    """Choose the training forward of every adapter: folded W' x with hook-computed knob gradients (on) or the
    unfolded W x + U(knob ⊙ Vh x) (off). Modules with a route2 quarantine always run unfolded."""
    for m in adapter_modules(model).values():
        m.fold_train = on
        m._wf = m._wf_knob = m._wf_ver = m._wf_cur = None


@contextmanager
def folded(model: nn.Module) -> Iterator[None]:
    """Fast sampling path: knobs (and route2's B_q A_q) folded into W, the bare model's cost; W restored
    bit-exactly on exit."""
    mods = list(adapter_modules(model).values())
    done = []
    try:
        for m in mods:
            m.fold()
            done.append(m)
        yield
    finally:
        for m in done:
            m.unfold()
