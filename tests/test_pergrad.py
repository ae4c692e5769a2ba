
import torch

from projected_grpo.adapter import adapter_modules, wrap_model
from projected_grpo.config import DEFAULT_TARGETS
from projected_grpo.pergrad import grouped_grads
from tests.conftest import random_qwen3
from tests.test_adapter import randomize_knobs


def seq_losses(model, ids, mask):
    logits = model(ids, attention_mask=mask).logits[:, :-1]
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")  # [B, T-1]
    m = mask[:, 1:].float()
    return (nll * m).sum(1) / m.sum(1)  # [B]


def test_batched_per_example_grads_equal_loop():
    model = random_qwen3()
    wrap_model(model, DEFAULT_TARGETS)
    randomize_knobs(model, scale=0.1)
    torch.manual_seed(0)
    ids = torch.randint(1, 97, (4, 10))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding
    mask[3, :5] = 0
    mods = adapter_modules(model)
    with grouped_grads(model, batch=4) as store:
        seq_losses(model, ids, mask).sum().backward()
    for b in range(4):
        model.zero_grad()
        seq_losses(model, ids[b : b + 1], mask[b : b + 1]).sum().backward()
        for name, m in mods.items():
            assert torch.allclose(store.grads[name][b], m.delta_s.grad, atol=1e-6, rtol=1e-4), (b, name)
            assert torch.equal(m.delta_s.grad, m.delta_s_hack.grad)


def test_grouped_sums_equal_full_gradient():
    model = random_qwen3()
    wrap_model(model, DEFAULT_TARGETS)
    ids = torch.randint(1, 97, (6, 8))
    mask = torch.ones_like(ids)
    groups = torch.tensor([0, 0, 1, 1, 1, 0])
    with grouped_grads(model, groups) as store:
        seq_losses(model, ids, mask).sum().backward()
    for name, m in adapter_modules(model).items():
        assert store.grads[name].shape == (2, m.r)
        assert torch.allclose(store.grads[name].sum(0), m.delta_s.grad, atol=1e-6, rtol=1e-4)


def test_completion_logprobs_match_full_logits():
    from projected_grpo.tokens import completion_logprobs, pack

    model = random_qwen3()
    prompts, comps = [[5, 6, 7], [8, 9, 10, 11, 12]], [[20, 21, 22, 23], [30, 31]]
    ids, attn, cmask = pack(prompts, comps, pad_id=0)
    logp, mask = completion_logprobs(model, ids, attn, cmask)
    pos = (attn.cumsum(1) - 1).clamp(min=0)
    full = torch.log_softmax(model(input_ids=ids, attention_mask=attn, position_ids=pos).logits.float(), -1)
    for b, c in enumerate(comps):
        lp = len(prompts[1])  # the longest prompt: completions start there
        want = torch.stack([full[b, lp - 1 + t, tok] for t, tok in enumerate(c)])
        assert torch.allclose(logp[b, : len(c)], want, atol=1e-5)
        assert mask[b].tolist() == [1] * len(c) + [0] * (4 - len(c))
