"""Prompt/completion tokenization shared by v_hack extraction, the sampler and the GRPO loss."""

from __future__ import annotations

import torch


def encode_prompt(tok, messages: list[dict]) -> list[int]:
    """Chat messages -> prompt token ids ending with the assistant header."""
    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return tok(text, add_special_tokens=False)["input_ids"]


def encode_completion(tok, text: str, max_tokens: int | None = None) -> list[int]:
    """Completion text -> ids followed by eos (truncated to max_tokens including eos)."""
    ids = tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    return ids[:max_tokens] if max_tokens is not None else ids


def pack(prompts: list[list[int]], completions: list[list[int]], pad_id: int):
    """Left-pad prompts, right-pad completions into one batch.

    Returns ids [B, T], attention_mask [B, T], completion_mask [B, T] (1 on completion tokens), where
    T = max prompt len + max completion len; the logit at t-1 predicts token t.
    """
    lp = max(len(p) for p in prompts)
    lc = max(len(c) for c in completions)
    B = len(prompts)
    ids = torch.full((B, lp + lc), pad_id, dtype=torch.long)
    attn = torch.zeros((B, lp + lc), dtype=torch.long)
    cmask = torch.zeros((B, lp + lc), dtype=torch.long)
    for b, (p, c) in enumerate(zip(prompts, completions)):
        ids[b, lp - len(p) : lp] = torch.tensor(p)
        ids[b, lp : lp + len(c)] = torch.tensor(c, dtype=torch.long)
        attn[b, lp - len(p) : lp + len(c)] = 1
        cmask[b, lp : lp + len(c)] = 1
    return ids, attn, cmask


def completion_logprobs(model, ids: torch.Tensor, attn: torch.Tensor, cmask: torch.Tensor):
    """log p(completion tokens | prompt, earlier tokens) for a `pack`ed batch -> (logp [B, Lc], mask [B, Lc]).

    The completion region is the last Lc columns; the LM head runs only on the Lc positions that predict
    them (`logits_to_keep`), not on the prompt. Position ids follow the attention mask (left padding)."""
    lc = int(cmask.shape[1] - cmask.any(0).float().argmax())  # completion columns = T - lp
    pos = (attn.cumsum(1) - 1).clamp(min=0)
    out = model(input_ids=ids, attention_mask=attn, position_ids=pos, logits_to_keep=lc + 1)
    logits = out.logits[:, :-1].float()  # [B, Lc, V]: the logit at column t-1 predicts token t
    logp = torch.log_softmax(logits, -1).gather(-1, ids[:, -lc:, None]).squeeze(-1)  # [B, Lc]
    return logp, cmask[:, -lc:]


def completion_nll(model, ids, attn, cmask) -> torch.Tensor:
    """Mean completion-token NLL per example -> [B]."""
    lp, mask = completion_logprobs(model, ids, attn, cmask)
    m = mask.float()
    return -(lp * m).sum(1) / m.sum(1).clamp(min=1)
