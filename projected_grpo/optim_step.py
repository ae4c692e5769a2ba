"""The optimizer side of a train step: AdamW over δS (and δS_hack, route2's quarantine) with the warmup-cosine
schedule, and one step = project (grad or update space, projection.knob_step) + clip + AdamW."""

from __future__ import annotations

import math

import torch

from projected_grpo.projection import knob_step


def lr_lambda(warmup: int, total: int):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return f


def make_optimizer(modules, tcfg, route2=None):
    """AdamW param groups: δS (weight_decay), δS_hack (weight_decay_hack) and route2's quarantine (same decay as
    δS_hack); the LR schedule steps once per batch. tcfg: cfg.trainer. Returns (opt, sched)."""
    main = [m.delta_s for m in modules.values()]
    hack = [m.delta_s_hack for m in modules.values()]
    b1, b2 = tcfg.betas
    groups = [
        {"params": main, "weight_decay": tcfg.weight_decay},
        {"params": hack, "weight_decay": tcfg.weight_decay_hack},
    ]
    if route2 is not None:
        groups.append({"params": route2.parameters(), "weight_decay": tcfg.weight_decay_hack})
    opt = torch.optim.AdamW(groups, lr=tcfg.lr, betas=(b1, b2))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(tcfg.warmup, tcfg.steps))
    return opt, sched


def optimizer_step(modules, v, pcfg, opt, grad_clip: float, route2=None, b: dict | None = None,
                   trusted: dict | None = None) -> dict:  # fmt: skip
    """Project (grad or update space), clip, step (projection.knob_step). Returns projection metrics.
    route2: cin is measured before the mask (on b's per-source gradients, which the act mask does not
    touch); the grad mask withholds after the measurement, and cout measures what is left. trusted: the
    projection=trusted subspace (trusted.py)."""
    g_pre = None
    if route2 is not None and b is not None:
        g_pre = {n: b["g_s"][n] + b["g_t"][n] for n in modules}
    withhold = (lambda: route2.withhold(modules)) if route2 is not None else None
    return knob_step(modules, v, pcfg, opt, grad_clip, g_pre, withhold, trusted)
