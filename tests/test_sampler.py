import torch

from projected_grpo.adapter import folded, wrap_model
from projected_grpo.config import DEFAULT_TARGETS
from projected_grpo.sampler import sample
from tests.conftest import random_qwen3
from tests.test_adapter import randomize_knobs

PROMPTS = [[5, 6, 7, 8, 9], [11, 12, 13], [20, 21, 22, 23]]


def hf_greedy(model, prompt, n):
    out = model.generate(torch.tensor([prompt]), max_new_tokens=n, do_sample=False, eos_token_id=1, pad_token_id=0)
    return out[0, len(prompt) :].tolist()


def test_greedy_matches_generate_with_left_padding():
    model = random_qwen3()
    wrap_model(model, DEFAULT_TARGETS)
    randomize_knobs(model, scale=0.2)
    with folded(model):
        got = sample(model, PROMPTS, 12, eos_id=1, pad_id=0, temperature=0)
        want = [hf_greedy(model, p, 12) for p in PROMPTS]
    for g, w in zip(got, want):
        assert g == w[: len(g)] and (len(g) == 12 or g[-1] == 1)


def test_sampling_is_seeded():
    model = random_qwen3()
    a = sample(model, PROMPTS, 10, 1, 0, 1.0, torch.Generator().manual_seed(3))
    b = sample(model, PROMPTS, 10, 1, 0, 1.0, torch.Generator().manual_seed(3))
    c = sample(model, PROMPTS, 10, 1, 0, 1.0, torch.Generator().manual_seed(4))
    assert a == b and a != c


def test_shared_prompt_prefill_gives_the_same_tokens():
    # the G samples of a prompt share one prefill (sampler._distinct_rows): same tokens as prefilling every row, and
    # the prefill runs on the distinct prompts only. kills: K/V or the last hidden copied to the wrong rows (src
    # shuffled), a repeated prompt of another length mapped onto a shorter one (attn not in the key), no sharing
    from projected_grpo.sampler import _LeanQwen3

    model = random_qwen3()
    wrap_model(model, DEFAULT_TARGETS)
    randomize_knobs(model, scale=0.2)
    rows = [PROMPTS[0]] * 3 + [PROMPTS[1]] * 3 + [[0] + PROMPTS[1]] * 2 + [PROMPTS[2]]  # pad id 0 inside a prompt
    batches = []
    orig = _LeanQwen3.forward

    def spy(self, x, *a):
        batches.append(x.shape[:2])
        return orig(self, x, *a)

    _LeanQwen3.forward = spy
    try:
        with folded(model):
            outs = [sample(model, rows, 10, 1, 0, 1.0, torch.Generator().manual_seed(5), share_prompts=share)
                    for share in (False, True)]  # fmt: skip
    finally:
        _LeanQwen3.forward = orig
    assert outs[0] == outs[1]
    assert len(set(map(tuple, outs[1][:3]))) > 1  # the rows of one prompt still draw their own samples
    prefills = [b for b in batches if b[1] > 1]
    assert prefills == [(9, 5), (4, 5)]  # every row, then the 4 distinct prompts


def test_greedy_matches_generate_unpadded_with_biases():
    # the decode without a mask (no row padded) and Linear biases (Qwen3 attention_bias: q/k/v/o through addmm), both
    # against HF generate. kills: a causal flag or a wrong mask on the mask-free decode, the bias dropped in _mm
    from transformers import Qwen3Config, Qwen3ForCausalLM

    cfg = Qwen3Config(vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=16, max_position_embeddings=128, tie_word_embeddings=True,
                      attention_bias=True)  # fmt: skip
    torch.manual_seed(1)
    model = Qwen3ForCausalLM(cfg).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Linear) and m.bias is not None:
                m.bias.normal_(0, 0.05)
    wrap_model(model, DEFAULT_TARGETS)
    randomize_knobs(model, scale=0.2)
    prompts = [PROMPTS[0], [30, 31, 32, 33, 34]]  # one length: no left padding
    with folded(model):
        got = sample(model, prompts, 12, eos_id=1, pad_id=0, temperature=0)
        want = [hf_greedy(model, p, 12) for p in prompts]
    for g, w in zip(got, want):
        assert g == w[: len(g)] and (len(g) == 12 or g[-1] == 1)
