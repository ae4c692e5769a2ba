import pytest
import torch
from omegaconf import OmegaConf

from projected_grpo.adapter import adapter_modules, wrap_model
from projected_grpo.config import DEFAULT_TARGETS, Gate, ProjectionConfig, ProjectionMode, Space
from projected_grpo.projection import apply_to_grads, cin, cin_null, project, project_grads
from tests.conftest import random_qwen3


def pcfg(**kw):
    return OmegaConf.structured(ProjectionConfig(**kw))


def orthonormal(k, r, seed=0):
    q, _ = torch.linalg.qr(torch.randn(r, k, generator=torch.Generator().manual_seed(seed)))
    return q.T.contiguous()  # [k, r]


def setup(seed=0):
    model = random_qwen3()
    wrap_model(model, DEFAULT_TARGETS)
    mods = adapter_modules(model)
    g = torch.Generator().manual_seed(seed)
    for m in mods.values():
        m.delta_s.grad = torch.randn(m.r, generator=g)
        m.delta_s_hack.grad = m.delta_s.grad.clone()
    names = sorted(mods)
    v = {n: orthonormal(3, mods[n].r, i) for i, n in enumerate(names[::2])}  # half the modules have a V
    return mods, v


def test_erase_one_sided_leaves_no_hackward_component():
    mods, v = setup()
    orig = {n: m.delta_s.grad.clone() for n, m in mods.items()}
    res = apply_to_grads(mods, v, pcfg(mode=ProjectionMode.erase))
    assert res.cin > 0 and res.cout == pytest.approx(0.0, abs=1e-6)
    for n, m in mods.items():
        if n in v:
            assert (v[n] @ m.delta_s.grad).max() <= 1e-6
            c = v[n] @ orig[n]
            assert torch.allclose(m.delta_s.grad, orig[n] - torch.relu(c) @ v[n], atol=1e-6)
        else:
            assert torch.equal(m.delta_s.grad, orig[n])  # modules absent from V are skipped
        assert m.delta_s_hack.grad is None  # erase: the quarantine does not train


def test_route_puts_exactly_the_removed_part_in_quarantine():
    mods, v = setup()
    orig = {n: m.delta_s.grad.clone() for n, m in mods.items()}
    apply_to_grads(mods, v, pcfg(mode=ProjectionMode.route))
    for n, m in mods.items():
        removed = torch.relu(v[n] @ orig[n]) @ v[n] if n in v else torch.zeros_like(orig[n])
        assert torch.allclose(m.delta_s_hack.grad, removed, atol=1e-6)
        assert torch.allclose(m.delta_s.grad + m.delta_s_hack.grad, orig[n], atol=1e-6)


def test_none_leaves_gradients_untouched_but_measures():
    mods, v = setup()
    orig = {n: m.delta_s.grad.clone() for n, m in mods.items()}
    res = apply_to_grads(mods, v, pcfg(mode=ProjectionMode.none))
    assert all(torch.equal(m.delta_s.grad, orig[n]) for n, m in mods.items())
    assert res.cin == pytest.approx(res.cout) and res.cin > 0
    assert res.cin == pytest.approx(cin(v, orig))


@pytest.mark.parametrize("gate,scale", [(Gate.no_gate, 1.0), (Gate.reverse, 2.0)])
def test_gates_and_overshoot(gate, scale):
    V = orthonormal(2, 10)
    g = torch.randn(10)
    g_new, removed = project(g, V, gate, overshoot=0.5)
    assert torch.allclose(removed, 0.5 * scale * (V @ g) @ V, atol=1e-6)
    assert torch.allclose(g_new, g - removed)


def test_preserve_magnitude():
    V = orthonormal(2, 10)
    g = torch.randn(10) + 3 * V[0]
    g_new, _ = project(g, V, Gate.one_sided, preserve_magnitude=True)
    assert g_new.norm() == pytest.approx(float(g.norm()), rel=1e-5)
    assert (V @ g_new).max() <= 1e-5


def test_cin_null_is_random_basis_expectation():
    r, k = 64, 4
    g = {"m": torch.randn(r)}
    emp = torch.tensor([cin({"m": orthonormal(k, r, s)}, g) ** 2 for s in range(400)]).mean()
    assert cin_null({"m": orthonormal(k, r)}, g) ** 2 == pytest.approx(k / (2 * r))
    assert float(emp) == pytest.approx(k / (2 * r), rel=0.15)


def test_project_grads_is_pure():
    V = {"a": orthonormal(2, 8)}
    g = {"a": torch.randn(8), "b": torch.randn(8)}
    g0 = {k: x.clone() for k, x in g.items()}
    out, res = project_grads(g, V, pcfg(mode=ProjectionMode.erase))
    assert all(torch.equal(g[k], g0[k]) for k in g) and torch.equal(out["b"], g["b"])
    assert set(res.removed) == {"a"}


# ---------------------------------------------------------------------------------------------------
# knob_step: projection in update space, basis overlap


def knob_setup(mode, space, seed=0):
    """Knobs after one warm-up AdamW step (so the moments are non-trivial), then a fresh gradient."""
    mods, v = setup(seed)
    torch.manual_seed(seed)
    with torch.no_grad():
        for m in mods.values():
            m.delta_s.add_(0.01 * torch.randn(m.r))
    opt = torch.optim.AdamW([{"params": [m.delta_s for m in mods.values()]},
                             {"params": [m.delta_s_hack for m in mods.values()]}], lr=0.03, betas=(0.9, 0.99))  # fmt: skip
    return mods, v, opt, pcfg(mode=mode, space=space)


def test_update_space_changes_the_applied_step_exactly_by_the_projected_part():
    # kills: deleting the line that applies the projected update (m.delta_s.copy_(before - d_new)) in knob_step,
    # and a quarantine that does not take exactly the removed part (delta_s_hack.sub_ dropped or sign flipped)
    from projected_grpo.projection import knob_step

    steps = {}
    for mode in (ProjectionMode.none, ProjectionMode.erase, ProjectionMode.route):
        mods, v, opt, p = knob_setup(mode, Space.update)
        before = {n: (m.delta_s.detach().clone(), m.delta_s_hack.detach().clone()) for n, m in mods.items()}
        out = knob_step(mods, v, p, opt, grad_clip=0.0)
        steps[mode] = {n: (before[n][0] - m.delta_s.detach(), m.delta_s_hack.detach() - before[n][1])
                       for n, m in mods.items()}  # fmt: skip
        if mode != ProjectionMode.none:
            assert out["cout_update"] == pytest.approx(0.0, abs=1e-6) and out["cin"] > 0
    n_removed = 0
    for n, V in v.items():
        d = steps[ProjectionMode.none][n][0]  # vanilla's -update [r]
        removed = torch.relu(V @ d) @ V
        n_removed += int(removed.norm() > 1e-3 * d.norm())
        for mode in (ProjectionMode.erase, ProjectionMode.route):
            assert torch.allclose(steps[mode][n][0], d - removed, atol=1e-7), (mode, n)
        assert torch.allclose(steps[ProjectionMode.route][n][1], -removed, atol=1e-7)  # δS_hack takes the step
        assert not steps[ProjectionMode.erase][n][1].any()
    assert n_removed >= len(v) // 2  # most modules had something hack-ward to remove
    for n in set(mods) - set(v):  # modules without a V take vanilla's step
        assert torch.equal(steps[ProjectionMode.route][n][0], steps[ProjectionMode.none][n][0])


def test_basis_overlap_is_a_subspace_measure():
    # kills: the old row-by-index |<v_old_i, v_new_i>| (1 row dropped -> 0.0, a 45° rotation -> 0.707)
    from projected_grpo.projection import basis_overlap

    V = orthonormal(4, 16)
    c, s = 2**-0.5, 2**-0.5
    rot = V.clone()
    rot[0], rot[1] = c * V[0] + s * V[1], -s * V[0] + c * V[1]
    assert basis_overlap({"m": V}, {"m": V.flip(0)}) == pytest.approx(1.0)
    assert basis_overlap({"m": V}, {"m": -V}) == pytest.approx(1.0)
    assert basis_overlap({"m": V}, {"m": rot}) == pytest.approx(1.0)
    assert basis_overlap({"m": V}, {"m": V[1:]}) == pytest.approx(0.75)
    other = orthonormal(8, 16, seed=1)
    W = other - (other @ V.T) @ V  # orthogonal to V's span
    W = torch.linalg.qr(W.T)[0].T[:4]
    assert basis_overlap({"m": V}, {"m": W}) == pytest.approx(0.0, abs=1e-6)
    assert basis_overlap({"a": V}, {"b": V}) is None
