"""Prompt/completion tokenization shared by v_hack extraction, the sampler and the GRPO loss."""

from __future__ import annotations

import torch

CHAT_OPTIONS = "_pg_chat_options"  # tokenizer attribute: extra chat-template arguments (set_chat_options)


def set_chat_options(tok, enable_thinking: bool) -> None:
    """Arguments every prompt of this tokenizer is rendered with (model.enable_thinking; build_model sets it).
    Qwen3's template reads enable_thinking (False: an empty <think></think> block, no reasoning); others ignore it."""
    setattr(tok, CHAT_OPTIONS, {"enable_thinking": bool(enable_thinking)})


def prompt_format(tok) -> str:
    """How prompts are rendered for `tok`, for the run summary."""
    if tok.chat_template is None:
        return "plain text (the tokenizer has no chat template): system, blank line, user"
    return f"the tokenizer's chat template, {getattr(tok, CHAT_OPTIONS, {'enable_thinking': False})}"


def render_chat(tok, messages: list[dict]) -> str:
    """Chat messages -> the prompt text: through the tokenizer's own chat template (with set_chat_options'
    arguments; enable_thinking=False when never set), or prompts.plain_prompt when it has no template."""
    if tok.chat_template is None:
        from projected_grpo.env.prompts import plain_prompt

        return plain_prompt(messages)
    options = getattr(tok, CHAT_OPTIONS, {"enable_thinking": False})
    return tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False, **options)


def encode_prompt(tok, messages: list[dict]) -> list[int]:
    """Chat messages -> prompt token ids ending with the assistant header (render_chat)."""
    return tok(render_chat(tok, messages), add_special_tokens=False)["input_ids"]


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
