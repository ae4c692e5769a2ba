"""The shared-prompt GRPO backward (trainer.shared_prompt_backward, tokens.shared_prompt_logprobs): the prompt runs
once per source and its K/V feed every completion, against the packed batch (the prompt once per completion): the
same log-probs, the same δS gradients per module and per source (student/teacher), folded and unfolded adapter,
through the Dr.GRPO backward with the KL reference."""


import pytest
import torch

from projected_grpo.adapter import adapter_modules, set_fold_train
from projected_grpo.config import ConfigError, validate
from projected_grpo.pergrad import grouped_grads
from projected_grpo.rollout import Rollout
from projected_grpo.tokens import completion_logprobs, pack, shared_prompt_logprobs
from tests.conftest import compose
from tests.test_folded_forward import ATOL, RTOL, backward_once, wrapped

PROMPT = [5, 6, 7, 8, 9, 10, 11]
COMPS = [[20, 21, 22, 23], [30, 31], [40, 41, 42, 43, 44], [50], [60, 61, 62]]  # ragged: right padding
SOURCE = torch.tensor([1, 0, 0, 1, 0])  # 0 student, 1 teacher (interleaved: the row map is not a slice)
WEIGHTS = torch.tensor([1.0, -2.0, 0.5, 3.0, -1.0])[:, None]  # a GRPO-like signed per-example loss


def per_source(model, shared: bool):
    model.zero_grad(set_to_none=True)
    with grouped_grads(model, SOURCE) as store:
        if shared:
            store.set_groups(torch.tensor([0, 1]), 2)  # prompt rows: student, teacher
            logp, mask = shared_prompt_logprobs(model, PROMPT, COMPS, SOURCE, 0,
                                                on_prompt=lambda: store.set_groups(SOURCE, 2))  # fmt: skip
        else:
            ids, attn, cmask = pack([PROMPT] * len(COMPS), COMPS, pad_id=0)
            logp, mask = completion_logprobs(model, ids, attn, cmask)
        (logp * mask * WEIGHTS).sum().backward()
    mods = adapter_modules(model)
    return logp.detach(), mask, {n: g.clone() for n, g in store.grads.items()}, {n: m.delta_s.grad.clone() for n, m in mods.items()}


@pytest.mark.parametrize("fold", [False, True])
def test_shared_prompt_equals_the_packed_batch_per_module_and_source(fold):
    # kills (each checked by hand, then restored): completion positions starting at 0 instead of len(prompt);
    # the prompt's last logit (completion token 0) always taken from prompt row 0; the K/V rows not reordered to
    # the completions' sources (reorder_cache removed); the completion rows' groups never set (on_prompt dropped:
    # pergrad's row-count error); pergrad summing a backward into the groups current at BACKWARD time instead of
    # those bound at its forward (folded sink and unfolded tensor hook); the folded forward never asking for a sink
    model = wrapped(seed=2)
    set_fold_train(model, fold)
    lp_p, m_p, src_p, g_p = per_source(model, shared=False)
    lp_s, m_s, src_s, g_s = per_source(model, shared=True)
    assert torch.equal(m_s, m_p) and m_s.shape == (5, 5)
    assert torch.allclose(lp_s * m_s, lp_p * m_p, rtol=RTOL, atol=ATOL)
    assert len(src_p) == 14 and src_p.keys() == src_s.keys()
    for n in src_p:
        assert torch.allclose(src_s[n], src_p[n], rtol=RTOL, atol=ATOL), n  # row 0 student, row 1 teacher
        assert torch.allclose(g_s[n], g_p[n], rtol=RTOL, atol=ATOL), n
    assert all(src_p[n][s].abs().max() > 1e-4 for n in src_p for s in (0, 1))  # real gradients on both sources


def test_shared_prompt_single_row_and_single_token_completions():
    # one source (S = 1, every completion on prompt row 0) and completions of one token (no completion pass)
    # kills: the lc > 1 guard dropped (an empty completion forward), rows indexed past S
    model = wrapped(seed=4)
    set_fold_train(model, True)
    comps = [[20], [30], [40]]
    rows = torch.zeros(3, dtype=torch.long)
    lp_s, m_s = shared_prompt_logprobs(model, PROMPT, comps, rows, 0)
    ids, attn, cmask = pack([PROMPT] * 3, comps, pad_id=0)
    lp_p, m_p = completion_logprobs(model, ids, attn, cmask)
    assert lp_s.shape == (3, 1) and torch.equal(m_s, m_p)
    assert torch.allclose(lp_s, lp_p, rtol=RTOL, atol=ATOL)


def rollouts():
    # group 1: students and teachers mixed; group 2: teachers only (one prompt row, source 1)
    return [Rollout(None, PROMPT, COMPS[:4], [""] * 4, [False, True, False, True], [1.0, 0.0, 1.25, 0.25],
                    [False] * 4, [False] * 4),
            Rollout(None, PROMPT[2:], COMPS[2:], [""] * 3, [True, True, True], [1.0, 0.25, 0.0],
                    [False] * 3, [False] * 3)]  # fmt: skip


@pytest.mark.parametrize("beta", [0.0, 0.05])
def test_grpo_backward_shared_prompt_matches_packed(beta):
    # the Dr.GRPO backward end to end: loss, KL (reference forward through the shared path too), per-source gradients
    # kills: the row map taken as the sources themselves (a teacher-only group then runs 2 prompt rows against
    # 1 group row); the prompt rows' groups set to the completions' sources
    (bp, gp), (bs, gs) = (backward_once(rollouts(), beta, fold=True, shared=shared) for shared in (False, True))
    assert bs["loss"] == pytest.approx(bp["loss"], rel=1e-5, abs=1e-7)
    assert bs["kl"] == pytest.approx(bp["kl"], rel=1e-4, abs=1e-9)
    assert (bp["kl"] > 0) == (beta > 0)
    for n in gp:
        for key in ("g_s", "g_t"):
            assert torch.allclose(bs[key][n], bp[key][n], rtol=RTOL, atol=ATOL), (key, n)
        assert torch.allclose(gs[n], gp[n], rtol=RTOL, atol=ATOL), n
    assert all(bp[k][n].abs().max() > 1e-4 for k in ("g_s", "g_t") for n in gp)
    for r, a, b in zip(rollouts(), bs["old_logps"], bp["old_logps"]):  # padded columns differ (never read)
        m = pack([r.prompt_ids] * len(r.completion_ids), r.completion_ids, 0)[2][:, -a.shape[1]:]  # [G, Lc]
        assert torch.allclose(a * m, b * m, rtol=RTOL, atol=ATOL)


def test_pergrad_refuses_a_backward_whose_rows_do_not_match_the_forward_groups():
    # the groups are bound at forward time; a forward of another batch size with stale groups is an error, not a
    # silent mis-split. kills: the row-count check dropped (onehot.T @ per_ex fails or broadcasts)
    model = wrapped(seed=1)
    set_fold_train(model, True)
    ids, attn, cmask = pack([PROMPT] * 3, COMPS[:3], pad_id=0)
    with grouped_grads(model, torch.tensor([0, 1])) as store, pytest.raises(RuntimeError, match="call set_groups"):
        logp, mask = completion_logprobs(model, ids, attn, cmask)
        (logp * mask).sum().backward()
    assert store.grads == {}


def test_shared_prompt_backward_with_grad_checkpointing_is_refused():
    # kills: the validate check dropped (checkpointed layers silently drop the cache: a wrong-shape crash mid-run)
    cfg = compose(["trainer.grad_checkpointing=true"])
    with pytest.raises(ConfigError, match="shared_prompt_backward=false"):
        validate(cfg)
    validate(compose(["trainer.grad_checkpointing=true", "trainer.shared_prompt_backward=false"]))
    validate(compose(["model=qwen3_4b"]))  # the checkpointed hub config ships with it off
