"""The folded training forward (adapter._FoldedKnob, trainer.folded_forward=true) against the unfolded one: the same
log-probs, the same δS / δS_hack gradients per module and per source (student/teacher) to float rounding, with left
padding, through the Dr.GRPO backward with the KL reference; W' refolded exactly when the knob changes."""

from types import SimpleNamespace

import pytest
import torch

from projected_grpo.adapter import adapter_modules, reference_model, set_fold_train, wrap_model
from projected_grpo.config import DEFAULT_TARGETS
from projected_grpo.loss import grpo_backward
from projected_grpo.pergrad import grouped_grads
from projected_grpo.rollout import Rollout
from projected_grpo.tokens import completion_logprobs, pack
from tests.conftest import random_qwen3
from tests.test_adapter import randomize_knobs

# fp32 on a CPU: the two paths sum the same products in another order (W' x vs W x + U(knob ⊙ Vh x); per-token
# products summed per example then over the batch vs autograd's one reduction), so they agree to ~1e-6 relative.
RTOL, ATOL = 1e-4, 1e-6

PROMPTS = [[5, 6, 7], [8, 9, 10, 11, 12, 13], [14, 15], [16, 17, 18, 19]]  # different lengths: left padding
COMPS = [[20, 21, 22, 23], [30, 31], [40, 41, 42, 43, 44], [50]]
SOURCE = torch.tensor([0, 1, 0, 1])  # 0 student, 1 teacher


def wrapped(seed=1):
    model = random_qwen3()
    wrap_model(model, DEFAULT_TARGETS)
    randomize_knobs(model, scale=0.1, seed=seed)
    return model


def per_source_grads(model, fold: bool):
    set_fold_train(model, fold)
    model.zero_grad(set_to_none=True)
    ids, attn, cmask = pack(PROMPTS, COMPS, pad_id=0)
    with grouped_grads(model, SOURCE) as store:
        logp, mask = completion_logprobs(model, ids, attn, cmask)
        weights = torch.tensor([1.0, -2.0, 0.5, 3.0])[:, None]  # per-example weights: a GRPO-like signed loss
        (logp * mask * weights).sum().backward()
    mods = adapter_modules(model)
    return (logp.detach(), {n: g.clone() for n, g in store.grads.items()},
            {n: (m.delta_s.grad.clone(), m.delta_s_hack.grad.clone()) for n, m in mods.items()})  # fmt: skip


def test_folded_gradients_equal_unfolded_per_module_and_source():
    # kills (each checked by hand, then restored): dz = dy @ U with a flipped sign; h = Vh x replaced by U-side
    # projection; the knob gradient from W' built without delta_s_hack; dx = dy @ W instead of dy @ W' (earlier
    # layers' gradients move); dx dropped (None: only the last layer's knobs get gradients); per-example sums taken
    # over the wrong axis (the per-source split mixes student and teacher)
    model = wrapped()
    lp_u, src_u, g_u = per_source_grads(model, fold=False)
    lp_f, src_f, g_f = per_source_grads(model, fold=True)
    assert torch.allclose(lp_f, lp_u, rtol=RTOL, atol=ATOL)
    assert src_u.keys() == src_f.keys() and len(src_u) == 14
    for n in src_u:
        assert src_f[n].shape == (2, adapter_modules(model)[n].r)
        assert torch.allclose(src_f[n], src_u[n], rtol=RTOL, atol=ATOL), n  # student row 0, teacher row 1
        assert torch.allclose(g_f[n][0], g_u[n][0], rtol=RTOL, atol=ATOL), n
        assert torch.equal(g_f[n][0], g_f[n][1])  # δS_hack gets the same gradient (the forward uses δS + δS_hack)
        assert torch.allclose(src_f[n].sum(0), g_f[n][0], rtol=RTOL, atol=ATOL), n
    assert any(src_u[n].abs().max() > 1e-3 for n in src_u)  # the test compares real gradients, not zeros


def test_zero_knobs_fold_to_w_itself_bit_exactly():
    # at knob = 0 (step 0, the reference model) W' is W: logits bit-identical to the unfolded path, no copy kept.
    # kills: W' always rebuilt from W + U diag(0) Vh through float32 products (the same here, but a copy per module)
    model = random_qwen3()
    wrap_model(model, DEFAULT_TARGETS)
    ids = torch.tensor([[3, 14, 15, 92, 65, 35], [2, 71, 82, 81, 82, 84]])
    set_fold_train(model, False)
    want = model(ids).logits
    set_fold_train(model, True)
    assert torch.equal(model(ids).logits, want)
    assert all(m._wf is None for m in adapter_modules(model).values())
    randomize_knobs(model, scale=0.1)
    set_fold_train(model, False)
    with torch.no_grad(), reference_model(model):
        ref_u = model(ids).logits
    set_fold_train(model, True)
    model(ids)  # folds W' for the trained knob
    with torch.no_grad(), reference_model(model):
        ref_f = model(ids).logits
    assert torch.equal(ref_f, ref_u) and torch.equal(ref_f, want)  # the KL reference is exactly the base model


def test_w_prime_is_refolded_when_the_knob_changes():
    # kills: a W' cache that is never invalidated (an optimizer step or a context's zero/restore goes unseen)
    model = wrapped()
    ids = torch.tensor([[3, 14, 15, 92, 65, 35]])
    set_fold_train(model, True)
    before = model(ids).logits
    with torch.no_grad():
        for m in adapter_modules(model).values():
            m.delta_s.add_(0.05)  # what AdamW's in-place step does
    after = model(ids).logits
    set_fold_train(model, False)
    assert not torch.allclose(after, before)
    assert torch.allclose(after, model(ids).logits, rtol=RTOL, atol=1e-5)
    set_fold_train(model, True)
    model(ids)
    with torch.no_grad(), reference_model(model):  # zeroed, then restored to the same values: W' reused
        model(ids)
    m0 = next(iter(adapter_modules(model).values()))
    w = m0._wf
    assert torch.allclose(model(ids).logits, after, rtol=RTOL, atol=1e-5) and m0._wf is w


def backward_once(rollouts, beta: float, fold: bool, shared: bool):
    """One Dr.GRPO backward of `rollouts` on a fresh wrapped model (seed 3) -> (its stats, δS gradients by module)."""
    model = wrapped(seed=3)
    set_fold_train(model, fold)
    mods = adapter_modules(model)
    opt = torch.optim.SGD([p for m in mods.values() for p in (m.delta_s, m.delta_s_hack)], lr=0.1)
    tcfg = SimpleNamespace(beta=beta, clip_eps=0.2, prompts_per_step=2, shared_prompt_backward=shared)
    b = grpo_backward(model, mods, opt, rollouts, tcfg, denom=32.0, pad_id=0)
    return b, {n: m.delta_s.grad.clone() for n, m in mods.items()}


@pytest.mark.parametrize("beta", [0.0, 0.05])
def test_grpo_backward_per_source_gradients_match(beta):
    # the Dr.GRPO backward end to end (one backward per prompt, teacher rows, the KL reference with knobs zeroed)
    # kills: the reference forward using the cached W' (the KL term and its gradient change when beta > 0)
    rollouts = [Rollout(None, p, [c, c[::-1] + [9], [60, 61], c[:1]], [""] * 4, [False, False, True, True],
                        [1.0, 0.0, 1.25, 0.25], [False] * 4, [False] * 4) for p, c in zip(PROMPTS[:2], COMPS[:2])]  # fmt: skip
    (bu, gu), (bf, gf) = (backward_once(rollouts, beta, fold, shared=False) for fold in (False, True))
    assert bf["loss"] == pytest.approx(bu["loss"], rel=1e-5, abs=1e-7)
    assert bf["kl"] == pytest.approx(bu["kl"], rel=1e-4, abs=1e-9)
    if beta > 0:
        assert bu["kl"] > 0
    for n in gu:
        for key in ("g_s", "g_t"):
            assert torch.allclose(bf[key][n], bu[key][n], rtol=RTOL, atol=ATOL), (key, n)
        assert torch.allclose(gf[n], gu[n], rtol=RTOL, atol=ATOL), n
