"""The quarantine must not move hack-ward without a hack-ward gradient (issue #18, item 1).

Pure-noise δS gradients under the organism's optimizer settings (AdamW lr 0.03, betas (0.9, 0.99), warmup 2 then
cosine, 60 steps, grad_clip 1), r = 64, k = 5 random orthonormal rows per module. The training-time knob is
δS + δS_hack; its hack-ward coefficients V·(−(δS + δS_hack)) (projection.hackward_coeffs) must stay at vanilla's
level for every route configuration that trains. Measured (3 seeds, 8 modules x 5 axes): vanilla mean +0.02..+0.05,
max |c| 0.36-0.41; route in update space: identical to vanilla; route in grad space (the original method's variant):
mean +1.24..+1.29, max 1.9-2.2.
"""

import functools

import pytest
import torch
from omegaconf import OmegaConf

from projected_grpo.config import Gate, ProjectionConfig, ProjectionMode, Route2Mask, Space
from projected_grpo.optim_step import lr_lambda
from projected_grpo.projection import hackward_coeffs, knob_step
from projected_grpo.route2 import Route2
from tests.conftest import compose

R, K, N_MODULES, STEPS, SIGMA = 64, 5, 8, 60, 1e-3
LR, BETAS, WARMUP, GRAD_CLIP = 0.03, (0.9, 0.99), 2, 1.0


class Knobs(torch.nn.Module):
    def __init__(self, r: int):
        super().__init__()
        self.delta_s = torch.nn.Parameter(torch.zeros(r))  # [r]
        self.delta_s_hack = torch.nn.Parameter(torch.zeros(r))  # [r]


def noise_run(pcfg, seed: int, route2_grad_mask: bool = False) -> torch.Tensor:
    """-> all hack-ward coefficients [N_MODULES * K] after STEPS noise steps through projection.knob_step."""
    g = torch.Generator().manual_seed(seed)
    mods = {f"m{i}": Knobs(R) for i in range(N_MODULES)}
    v = {n: torch.linalg.qr(torch.randn(R, K, generator=g))[0].T.contiguous() for n in mods}  # [K, R]
    groups = [{"params": [m.delta_s for m in mods.values()], "weight_decay": 0.0},
              {"params": [m.delta_s_hack for m in mods.values()], "weight_decay": 0.0}]  # fmt: skip
    opt = torch.optim.AdamW(groups, lr=LR, betas=BETAS)  # as loop.Trainer builds it
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(WARMUP, STEPS))
    withhold = None
    if route2_grad_mask:  # route2's real withhold() on 4 noise "rollouts" per module, mask = v's first row
        r2 = Route2.__new__(Route2)
        r2.mask, r2.v = Route2Mask.grad, {n: v[n][0] for n in mods}
        withhold = lambda: r2.withhold(mods)
    for _ in range(STEPS):
        per_rollout = {n: SIGMA * torch.randn(4, R, generator=g) for n in mods}  # [4, R]
        if route2_grad_mask:
            r2.rollout_grads = per_rollout
        for n, m in mods.items():
            m.delta_s.grad = per_rollout[n].sum(0)
            m.delta_s_hack.grad = per_rollout[n].sum(0)  # autograd gives both knobs the same gradient
        knob_step(mods, v, pcfg, opt, GRAD_CLIP, before_clip=withhold)
        sched.step()
    return torch.cat(list(hackward_coeffs(mods, v).values()))


def pcfg(**kw):
    return OmegaConf.structured(ProjectionConfig(**kw))


VANILLA = pcfg(mode=ProjectionMode.none)
SEEDS = (0, 1, 2)


@functools.cache
def vanilla_level(seed: int) -> tuple[float, float]:
    c = noise_run(VANILLA, seed)
    return float(c.mean()), float(c.abs().max())


# Every route configuration that trains: route's default (update space) under every gate, and route2's grad mask.
ROUTE_CONFIGS = {
    "route_default": (compose(["projection=route"]).projection, False),
    **{f"route_update_{g.value}": (pcfg(mode=ProjectionMode.route, space=Space.update, gate=g), False) for g in Gate},
    "route2_grad": (pcfg(mode=ProjectionMode.route2), True),
}


@pytest.mark.parametrize("name", sorted(ROUTE_CONFIGS))
@pytest.mark.parametrize("seed", SEEDS)
def test_route_does_not_drift_hackward_on_noise(name, seed):
    # kills: route's default back in grad space (conf/projection/route.yaml space: grad), or update space that
    # routes without moving δS back (drop `m.delta_s.copy_(...)` or `delta_s_hack.sub_` in knob_step)
    p, r2 = ROUTE_CONFIGS[name]
    c = noise_run(p, seed, route2_grad_mask=r2)
    v_mean, v_max = vanilla_level(seed)
    assert float(c.mean()) <= v_mean + 0.1, (name, float(c.mean()), v_mean)
    assert float(c.max()) <= 1.5 * v_max, (name, float(c.max()), v_max)


def test_route_default_is_update_space():
    # kills: route defaulting to the original grad-space variant
    assert compose(["projection=route"]).projection.space == Space.update
    assert compose(["arm=route_real"]).projection.space == Space.update


def test_update_space_route_moves_the_training_knob_exactly_as_vanilla():
    # kills: the quarantine taking anything but the removed part of the step (δS + δS_hack must equal vanilla's δS)
    for gate in Gate:
        p = pcfg(mode=ProjectionMode.route, space=Space.update, gate=gate)
        assert torch.allclose(noise_run(p, 0), noise_run(VANILLA, 0), atol=1e-6)


def test_grad_space_route_original_variant_drifts_hackward():
    """The original method's variant stays selectable (projection.space=grad) and shows the AdamW artifact this
    file guards against: with no hack signal, the routed remainder is normalised into hack-ward steps."""
    c = noise_run(pcfg(mode=ProjectionMode.route, space=Space.grad), 0)
    v_mean, _ = vanilla_level(0)
    assert float(c.mean()) > v_mean + 0.8
