"""Projection of the δS gradient (or update) away from the hack basis v_hack.

Per module, with V [k, r] orthonormal rows oriented hack-ward and g [r] the δS gradient:
    c = V g                              [k]   (c_i > 0: descending g moves toward the hack)
    removed = overshoot * gate(c) @ V     [r]   gate: one_sided relu(c) | no_gate c | reverse 2c
    erase: g <- g - removed               route: also delta_s_hack.grad <- removed
    cin = ||relu(V g)|| / ||g||,  cout = the same on the projected gradient (relu before aggregation).
Module-level figures are aggregated as sqrt(sum of squares) over the modules present in v_hack.
"""

from __future__ import annotations

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

    With projection.mode=none (or route2, whose masks live in route2.py), or remove=False, nothing is removed
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


def cout_of(v_hack: dict[str, torch.Tensor], directions: dict[str, torch.Tensor]) -> float:
    """Hack-ward fraction of a set of gradient-like directions (for an update u pass -u)."""
    return cin(v_hack, directions)
