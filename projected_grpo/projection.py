"""Projection of the δS gradient (or update) away from the hack basis v_hack.

Per module, with V [k, r] orthonormal rows oriented hack-ward and g [r] the δS gradient:
    c = V g                              [k]   (c_i > 0: descending g moves toward the hack)
    removed = overshoot * gate(c) @ V     [r]   gate: one_sided relu(c) | no_gate c | reverse 2c
    erase: g <- g - removed               route: also delta_s_hack.grad <- removed
    cin = ||relu(V g)|| / ||g||,  cout = the same on the projected gradient (relu before aggregation).
Module-level figures are aggregated as sqrt(sum of squares) over the modules present in v_hack.

projection.space=update applies the same projection to AdamW's actual step d = before - after (a gradient-like
direction): δS <- before - (d - removed); route moves `removed` into δS_hack, so δS + δS_hack moves exactly as
the unprojected step (``knob_step``). route's default (conf/projection/route.yaml). route in grad space is the
original method's variant: δS_hack's AdamW normalises the small, sign-consistent routed remainder relu(c)V into
full-size steps, which drift hack-ward even on pure-noise gradients (tests/test_noise_drift.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from projected_grpo.config import Gate, ProjectionMode, Space

GATE_SCALE = {Gate.one_sided: None, Gate.no_gate: 1.0, Gate.reverse: 2.0}


def gate_coeffs(c: torch.Tensor, gate: Gate) -> torch.Tensor:
    """c [k] -> the coefficients of V to remove."""
    if gate == Gate.one_sided:
        return torch.relu(c)
    return GATE_SCALE[gate] * c


def project(g: torch.Tensor, V: torch.Tensor, gate: Gate, overshoot: float = 1.0, preserve_magnitude: bool = False):
    """g [r], V [k, r] -> (g_new [r], removed [r]) with g_new = g - removed (then optionally rescaled)."""
    c = V @ g  # [k]
    removed = overshoot * (gate_coeffs(c, gate) @ V)  # [r]
    g_new = g - removed
    if preserve_magnitude:
        n_new = g_new.norm()
        if n_new > 0:
            g_new = g_new * (g.norm() / n_new)
    return g_new, removed


def trusted_project(g: torch.Tensor, B: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """projection=trusted: g [r] -> Bᵀ diag(w) B g with B [k, r] the trusted basis (orthonormal rows) and w [k] its
    singular-value weights S_i/S_0 (projected_grpo/trusted.py): in-subspace parts kept, scaled by w; the rest gone."""
    return (w * (B @ g)) @ B


def hackward_sq(V: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """||relu(V g)||^2, the squared hack-ward mass of g along V."""
    return torch.relu(V @ g).pow(2).sum()


@dataclass
class Fraction:
    """Accumulates sqrt(sum num^2) / sqrt(sum den^2) over modules."""

    num_sq: float = 0.0
    den_sq: float = 0.0

    def add(self, num_sq: torch.Tensor | float, den_sq: torch.Tensor | float) -> None:
        self.num_sq += float(num_sq)
        self.den_sq += float(den_sq)

    @property
    def value(self) -> float:
        return (self.num_sq / self.den_sq) ** 0.5 if self.den_sq > 0 else 0.0


def cin(v_hack: dict[str, torch.Tensor], grads: dict[str, torch.Tensor]) -> float:
    """Aggregated ||relu(V g)|| / ||g|| over the modules of v_hack."""
    f = Fraction()
    for name, V in v_hack.items():
        g = grads[name].to(V.dtype)
        f.add(hackward_sq(V, g), g.pow(2).sum())
    return f.value


def cin_null(v_hack: dict[str, torch.Tensor], grads: dict[str, torch.Tensor]) -> float:
    """Random-basis expectation of cin: E||relu(V g)||^2 = k/(2r) ||g||^2 for k random orthonormal rows in R^r."""
    f = Fraction()
    for name, V in v_hack.items():
        k, r = V.shape
        g2 = float(grads[name].pow(2).sum())
        f.add(k / (2 * r) * g2, g2)
    return f.value


@dataclass
class ProjectionResult:
    cin: float = 0.0
    cout: float = 0.0
    frac_fired: float = 0.0
    cin_null: float = 0.0
    removed: dict[str, torch.Tensor] = field(default_factory=dict)


def project_grads(
    grads: dict[str, torch.Tensor], v_hack: dict[str, torch.Tensor], pcfg, remove: bool = True
) -> tuple[dict[str, torch.Tensor], ProjectionResult]:
    """Project every module's gradient present in v_hack; others pass through. Pure: returns new tensors.

    With projection.mode=none (or route2, whose masks live in route2/), or remove=False, nothing is removed
    (cin is measured only)."""
    fin, fout = Fraction(), Fraction()
    fired = total = 0
    out, removed = dict(grads), {}
    for name, V in v_hack.items():
        g = grads[name].to(V.dtype)
        c = V @ g
        fired += int((c > 0).sum())
        total += c.numel()
        fin.add(hackward_sq(V, g), g.pow(2).sum())
        if remove and pcfg.mode in (ProjectionMode.erase, ProjectionMode.route):  # none/route2: measure only
            g_new, rem = project(g, V, pcfg.gate, pcfg.overshoot, pcfg.preserve_magnitude)
            out[name], removed[name] = g_new.to(grads[name].dtype), rem.to(grads[name].dtype)
        fout.add(hackward_sq(V, out[name].to(V.dtype)), out[name].pow(2).sum())
    res = ProjectionResult(
        cin=fin.value,
        cout=fout.value,
        frac_fired=fired / total if total else 0.0,
        cin_null=cin_null(v_hack, grads),
        removed=removed,
    )
    return out, res


def apply_to_grads(modules: dict, v_hack: dict[str, torch.Tensor], pcfg) -> ProjectionResult:
    """Grad space: rewrite delta_s.grad (erase/route) and delta_s_hack.grad (route: exactly the removed part;
    otherwise the quarantine is not trained). Call after backward, before clipping and optimizer.step()."""
    grads = {n: m.delta_s.grad for n, m in modules.items()}
    new, res = project_grads(grads, v_hack, pcfg)
    for n, m in modules.items():
        m.delta_s.grad = new[n]
        if pcfg.mode == ProjectionMode.route and pcfg.space == Space.grad:
            m.delta_s_hack.grad = res.removed.get(n, torch.zeros_like(m.delta_s_hack))
        else:
            m.delta_s_hack.grad = None
    return res


def grad_norm(params: list[torch.nn.Parameter]) -> float:
    gs = [p.grad for p in params if p.grad is not None]
    return float(torch.linalg.vector_norm(torch.stack([g.norm() for g in gs]))) if gs else 0.0


def knob_step(
    modules: dict, v_hack: dict[str, torch.Tensor], pcfg, opt: torch.optim.Optimizer, grad_clip: float,
    g_measure: dict[str, torch.Tensor] | None = None, before_clip=None, trusted: dict | None = None,
) -> dict:
    """One projected optimizer step after backward: project (grad or update space), clip, step.

    g_measure: name -> [r] the gradient cin/cin_null/frac_fired are measured on when delta_s.grad is already
    masked (route2 mask=act); default delta_s.grad. before_clip: called after the measurement and before clipping
    (route2 mask=grad withholds there); cout is then measured on what is left. trusted: name -> (B, w), the
    trusted subspace (projection=trusted: every delta_s.grad replaced by trusted_project). Returns the metrics
    (sec_projection: the time outside AdamW's own step)."""
    t0 = time.perf_counter()
    grads = {n: m.delta_s.grad for n, m in modules.items()}
    if pcfg.space == Space.grad:
        res = apply_to_grads(modules, v_hack, pcfg)
    else:  # update space: measure on the gradient; the quarantine is not trained by autograd
        _, res = project_grads(grads, v_hack, pcfg, remove=False)
        for m in modules.values():
            m.delta_s_hack.grad = None
    if g_measure is not None:
        _, pre = project_grads(g_measure, v_hack, pcfg, remove=False)
        res.cin, res.cin_null, res.frac_fired = pre.cin, pre.cin_null, pre.frac_fired
    if before_clip is not None:
        before_clip()
        res.cout = cin(v_hack, {n: m.delta_s.grad for n, m in modules.items()})
    if trusted is not None:
        for n, m in modules.items():
            B, w = trusted[n]
            m.delta_s.grad = trusted_project(m.delta_s.grad.to(B.dtype), B, w).to(m.delta_s.dtype)
        res.cout = cin(v_hack, {n: m.delta_s.grad for n, m in modules.items()})
    params = [p for g in opt.param_groups for p in g["params"]]
    norm = grad_norm(params)
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], grad_clip)
    norm_clipped = grad_norm(params)
    before = {n: m.delta_s.detach().clone() for n, m in modules.items()}
    t_opt = time.perf_counter()
    opt.step()
    t_opt = time.perf_counter() - t_opt
    d = {n: before[n] - m.delta_s.detach() for n, m in modules.items()}  # -update: gradient-like, [r]
    if pcfg.space == Space.update:
        d_new, ures = project_grads(d, v_hack, pcfg)
        with torch.no_grad():
            for n, m in modules.items():
                m.delta_s.copy_(before[n] - d_new[n])  # the projected step
                if pcfg.mode == ProjectionMode.route and n in ures.removed:
                    m.delta_s_hack.sub_(ures.removed[n])  # the quarantine takes the removed part of the step
        d = d_new
        res.cout = ures.cout
    return {
        "cin": res.cin,
        "cout": res.cout,
        "cout_update": cin(v_hack, d),
        "cin_null": res.cin_null,
        "frac_fired": res.frac_fired,
        "grad_norm": norm,
        "grad_norm_clipped": norm_clipped,
        "sec_projection": time.perf_counter() - t0 - t_opt,
    }


def hackward_coeffs(modules: dict, v_hack: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """name -> [k] V·(−(δS + δS_hack)): how far the training-time knob has moved hack-ward along each axis
    (a positive coefficient = the knob moved the way descending a hack-ward gradient would)."""
    return {n: V @ -(modules[n].delta_s + modules[n].delta_s_hack).detach().to(V.dtype) for n, V in v_hack.items()}


def basis_overlap(old: dict[str, torch.Tensor], new: dict[str, torch.Tensor]) -> float | None:
    """Subspace overlap of two bases, mean over the modules present in both of ||V_old V_newᵀ||²_F / k with
    k = max(k_old, k_new) nonzero rows: 1 for the same subspace (any row order, rotation or signs), 0 for
    orthogonal ones, (k-1)/k when one row of k is dropped. None when no module has rows in both."""
    vals = []
    for n in sorted(set(old) & set(new)):
        a = old[n][old[n].norm(dim=1) > 0].double()  # [k_old, r] (rows zeroed by tau_axis do not count)
        b = new[n][new[n].norm(dim=1) > 0].double().to(a.device)  # [k_new, r]
        k = max(a.shape[0], b.shape[0])
        if k == 0:
            continue
        vals.append(float((a @ b.T).pow(2).sum()) / k)
    return sum(vals) / len(vals) if vals else None
