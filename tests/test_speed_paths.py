"""The speed paths produce the same tokens / gradients as the slow reference paths.

Covered elsewhere (not duplicated here):
  * greedy sampler == `generate`, with left padding and folded knobs: tests/test_sampler.py
  * folded weights restored bit-exactly after `adapter.folded`: tests/test_adapter.py
  * per-example δS gradients from one backward == per-completion backwards: tests/test_pergrad.py
Added here: sampled (temperature 1) tokens equal `generate`'s for the same seed; the lean decoder equals the
generic HF-forward decoder for the same generator; `draw` follows softmax(logits / T) (chi-square bound).
"""

import pytest
import torch

from projected_grpo import sampler
from projected_grpo.adapter import folded, wrap_model
from projected_grpo.config import DEFAULT_TARGETS
from projected_grpo.sampler import draw, sample
from tests.conftest import random_qwen3
from tests.test_adapter import randomize_knobs

PROMPTS = [[5, 6, 7, 8, 9], [11, 12, 13], [20, 21, 22, 23]]


def _wrapped():
    model = random_qwen3()
    wrap_model(model, DEFAULT_TARGETS)
    randomize_knobs(model, scale=0.2)
    return model


def test_sampled_tokens_match_generate_same_seed():
    """Both draw torch.multinomial(softmax(logits)) per step from the global RNG, rows in order."""
    model = _wrapped()
    L = max(map(len, PROMPTS))
    ids = torch.tensor([[0] * (L - len(p)) + p for p in PROMPTS])
    attn = torch.tensor([[0] * (L - len(p)) + [1] * len(p) for p in PROMPTS])
    with folded(model):
        for seed in range(3):
            torch.manual_seed(seed)
            got = sample(model, PROMPTS, 16, eos_id=1, pad_id=0, temperature=1.0, generator=None)
            torch.manual_seed(seed)
            out = model.generate(input_ids=ids, attention_mask=attn, do_sample=True, top_k=0, top_p=1.0,
                                 temperature=1.0, max_new_tokens=16, eos_token_id=1, pad_token_id=0)  # fmt: skip
            want = out[:, L:].tolist()
            for g, w in zip(got, want):
                assert g == w[: len(g)] and (len(g) == 16 or g[-1] == 1)


def test_lean_decoder_matches_generic_path(monkeypatch):
    model = _wrapped()
    with folded(model):
        assert sampler._LeanQwen3.build(model) is not None
        lean = sample(model, PROMPTS, 20, 1, 0, 1.0, torch.Generator().manual_seed(7))
        monkeypatch.setattr(sampler._LeanQwen3, "build", classmethod(lambda cls, m: None))
        generic = sample(model, PROMPTS, 20, 1, 0, 1.0, torch.Generator().manual_seed(7))
    assert lean == generic


def test_lean_decoder_unfolded_and_hooked_models():
    """Unfolded adapters run through the module (knobs count); a forward hook forces the generic path."""
    model = _wrapped()
    with folded(model):
        want = sample(model, PROMPTS, 10, 1, 0, 0.0)
    assert sample(model, PROMPTS, 10, 1, 0, 0.0) == want
    h = model.model.layers[0].mlp.register_forward_hook(lambda *a: None)
    try:
        assert sampler._LeanQwen3.build(model) is None
        assert sample(model, PROMPTS, 10, 1, 0, 0.0) == want
    finally:
        h.remove()


def test_draw_follows_tempered_softmax_chi_square():
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, -3.0])
    T, n = 0.7, 20000
    g = torch.Generator().manual_seed(0)
    toks = draw(logits.expand(n, -1).contiguous(), T, g)
    counts = torch.bincount(toks, minlength=6).double()
    expected = torch.softmax(logits / T, -1).double() * n
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 20.52, (chi2, counts.tolist(), expected.tolist())  # df=5, p=0.001


def test_draw_is_torch_multinomial_bit_for_bit():
    # draw() is torch.multinomial(softmax(logits / T), 1) without its input checks: the same tokens from the same
    # generator, and the generator left in the same state (so every later draw, and the golden rows, are unchanged).
    # kills: noise from rand/exponential of another shape (stream moved), probs * q instead of probs / q, the
    # temperature dropped at T != 1, the division skipped at the wrong temperature
    g = torch.Generator().manual_seed(11)
    for T in (1.0, 0.7, 1.3):
        for _ in range(20):
            logits = torch.randn(8, 300, generator=g) * 4
            state = g.get_state()
            want = torch.multinomial(torch.softmax(logits / T, -1), 1, generator=g).squeeze(-1)
            want_state = g.get_state()
            g.set_state(state)
            assert torch.equal(draw(logits, T, g), want)
            assert torch.equal(g.get_state(), want_state)


def test_draw_refuses_non_finite_logits_like_multinomial():
    # torch.multinomial raised on NaN / inf probabilities; draw() keeps that check (on the picked values). A NaN or
    # +inf logit, or a row of -inf, raises at T = 1 and at T = 0, naming the row; -inf on some tokens is a mask, fine.
    # kills: the check dropped (argmax(p / q) returns token 0 for such rows), the check skipped for greedy
    g = torch.Generator().manual_seed(0)
    ok = torch.randn(3, 50, generator=g)
    for T in (1.0, 0.0):
        for bad in (float("nan"), float("inf")):
            x = ok.clone()
            x[1, 7] = bad
            with pytest.raises(RuntimeError, match=r"rows \[1\]"):
                draw(x, T, g)
        x = ok.clone()
        x[2] = float("-inf")
        with pytest.raises(RuntimeError, match=r"rows \[2\]"):
            draw(x, T, g)
        masked = ok.clone()
        masked[:, :10] = float("-inf")
        assert bool((draw(masked, T, g) >= 10).all())
