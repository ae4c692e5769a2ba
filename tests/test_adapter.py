import copy

import pytest
import torch

from projected_grpo.adapter import (
    SVD_DIR,
    adapter_modules,
    deployed,
    folded,
    reference_model,
    svd_cached,
    weight_key,
    wrap_model,
)
from projected_grpo.config import DEFAULT_TARGETS
from tests.conftest import random_qwen3

IDS = torch.tensor([[3, 14, 15, 92, 65, 35, 89, 79], [2, 71, 82, 81, 82, 84, 59, 0]])


def wrapped_pair(cache_dir=None):
    base = random_qwen3()
    model = copy.deepcopy(base)
    names = wrap_model(model, DEFAULT_TARGETS, cache_dir)
    return base, model, names


def randomize_knobs(model, scale=0.3, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in adapter_modules(model).values():
            m.delta_s.copy_(torch.randn(m.r, generator=g) * scale)
            m.delta_s_hack.copy_(torch.randn(m.r, generator=g) * scale)


def test_zero_knobs_bit_identical(cache_dir):
    base, model, names = wrapped_pair(cache_dir)
    assert len(names) == 2 * 7  # 2 layers x (q k v o gate up down)
    with torch.no_grad():
        assert torch.equal(base(IDS).logits, model(IDS).logits)


def test_random_knobs_match_dense_float64_reference():
    base, model, _ = wrapped_pair()
    randomize_knobs(model)
    for name, m in adapter_modules(model).items():
        W = base.get_submodule(name).weight.double()
        U, Vh = m.U.double(), m.Vh.double()
        dense = W + U @ torch.diag((m.delta_s + m.delta_s_hack).double()) @ Vh  # [d_out, d_in]
        x = torch.randn(5, m.in_features)
        want = x.double() @ dense.T
        got = m(x).double()
        assert torch.allclose(got, want, atol=1e-4, rtol=1e-4), name


def test_only_knobs_receive_gradients():
    _, model, _ = wrapped_pair()
    randomize_knobs(model)
    model(IDS).logits.sum().backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith(("delta_s", "delta_s_hack")) for n in trainable)
    for n, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, n
        else:
            assert p.grad is None, n


def test_reference_context_restores_after_exception():
    base, model, _ = wrapped_pair()
    randomize_knobs(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    with pytest.raises(RuntimeError, match="boom"), reference_model(model):
        with torch.no_grad():
            assert torch.equal(model(IDS).logits, base(IDS).logits)  # free reference = base model
        raise RuntimeError("boom")
    for n, p in model.named_parameters():
        if p.requires_grad:
            assert torch.equal(p, before[n]), n


def test_deployed_zeroes_only_quarantine():
    _, model, _ = wrapped_pair()
    randomize_knobs(model)
    m = next(iter(adapter_modules(model).values()))
    ds, dsh = m.delta_s.detach().clone(), m.delta_s_hack.detach().clone()
    with deployed(model):
        assert torch.equal(m.delta_s, ds) and not m.delta_s_hack.any()
    assert torch.equal(m.delta_s_hack, dsh)


def test_folded_equals_hook_path_and_restores_w_exactly():
    base, model, _ = wrapped_pair()
    w_before = {n: m.weight.detach().clone() for n, m in adapter_modules(model).items()}
    with torch.no_grad(), folded(model):  # at zero knobs: exactly the base model
        assert torch.equal(model(IDS).logits, base(IDS).logits)
    randomize_knobs(model)
    with torch.no_grad():
        hook = model(IDS).logits
        with folded(model):
            fold = model(IDS).logits
    assert torch.allclose(hook, fold, atol=1e-4, rtol=1e-4)
    for n, m in adapter_modules(model).items():
        assert torch.equal(m.weight, w_before[n]), n
        assert not m.folded


def test_folded_restores_after_exception():
    _, model, _ = wrapped_pair()
    randomize_knobs(model)
    w_before = {n: m.weight.detach().clone() for n, m in adapter_modules(model).items()}
    with pytest.raises(ValueError), folded(model):
        raise ValueError
    assert all(torch.equal(m.weight, w_before[n]) for n, m in adapter_modules(model).items())


def test_svd_cache_miss_hit_and_stale(cache_dir):
    w = torch.randn(24, 16)
    U, S, Vh = svd_cached(w, cache_dir)
    path = cache_dir / SVD_DIR / f"{weight_key(w)}.safetensors"
    assert path.exists()
    mtime = path.stat().st_mtime_ns
    U2, S2, Vh2 = svd_cached(w, cache_dir)  # hit: same values, file untouched
    assert torch.equal(U, U2) and torch.equal(S, S2) and torch.equal(Vh, Vh2)
    assert path.stat().st_mtime_ns == mtime
    assert torch.allclose(U @ torch.diag(S) @ Vh, w, atol=1e-5)
    # A file under this key that belongs to another weight fails loudly and is not overwritten.
    other_w = torch.randn(24, 16)
    svd_cached(other_w, cache_dir)
    path.unlink()
    (cache_dir / SVD_DIR / f"{weight_key(other_w)}.safetensors").rename(path)
    stale_bytes = path.read_bytes()
    with pytest.raises(RuntimeError, match=r"stale SVD cache entry .*rm "):
        svd_cached(w, cache_dir)
    assert path.read_bytes() == stale_bytes
