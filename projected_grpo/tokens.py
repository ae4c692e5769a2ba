"""Prompt/completion tokenization shared by v_hack extraction, the sampler and the GRPO loss."""

from __future__ import annotations

import torch

from projected_grpo.env.prompts import render_prompt

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


def prompt_ids(tok, problem, mode=None, inoculation: str | None = None) -> list[int]:
    """A problem's prompt token ids under `mode` (default: its own); `inoculation` (training prompts only) is appended
    to the system prompt. The one place prompts are built, for sampling, training and calibration alike."""
    return encode_prompt(tok, render_prompt(problem, mode or problem.mode, inoculation))


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


def shared_prompt_logprobs(model, prompt: list[int], completions: list[list[int]], rows: torch.Tensor, pad_id: int,
                           on_prompt=None):  # fmt: skip
    """completion_logprobs of `pack([prompt] * G, completions)` with the prompt run once per prompt row instead of
    once per completion: a prompt pass over S rows (S = rows.max() + 1, identical ids) keeps its K/V (with their
    graph), each completion row b continues from prompt row rows[b]. Same log-probs to float rounding, gradients
    included (the prompt's K/V gradient is the sum over the completions that read it, as in the packed batch).
    rows [G] long: one prompt row per gradient group (e.g. source), so per-row gradients (pergrad) stay exact.
    on_prompt(), if given, runs between the prompt pass and the completion pass (pergrad.set_groups for the rows).
    Not under gradient checkpointing (it drops the cache; config/validate refuses the pair).
    -> (logp [G, Lc], mask [G, Lc])"""
    device = next(model.parameters()).device
    rows = rows.to(device)
    S, G = int(rows.max()) + 1, len(completions)
    p = torch.tensor([prompt] * S, dtype=torch.long, device=device)  # [S, Lp], no padding
    out = model(input_ids=p, use_cache=True, logits_to_keep=1)
    first = out.logits[:, -1].float()  # [S, V]: predicts completion token 0
    cache = out.cache
    cache.reorder_cache(rows)  # [G, heads, Lp, d] per layer: index_select, gradients flow back to the S rows
    if on_prompt is not None:
        on_prompt()
    ids, cattn, _ = (t.to(device) for t in pack([[]] * G, completions, pad_id))  # right-padded completions [G, Lc]
    lc = ids.shape[1]
    lp = len(prompt)
    logits = first[rows][:, None]  # [G, 1, V]
    if lc > 1:  # the last token's output predicts nothing: fed up to lc - 1
        attn = torch.cat([torch.ones((G, lp), dtype=torch.long, device=device), cattn[:, :-1]], 1)  # [G, Lp+Lc-1]
        pos = (lp + torch.arange(lc - 1, device=device))[None].expand(G, -1)  # as pack's cumsum (no left padding)
        rest = model(input_ids=ids[:, :-1], attention_mask=attn, position_ids=pos, cache=cache, use_cache=True)
        logits = torch.cat([logits, rest.logits.float()], 1)  # [G, Lc, V]
    logp = torch.log_softmax(logits, -1).gather(-1, ids[..., None]).squeeze(-1)  # [G, Lc]
    return logp, cattn


def completion_nll(model, ids, attn, cmask) -> torch.Tensor:
    """Mean completion-token NLL per example -> [B]."""
    lp, mask = completion_logprobs(model, ids, attn, cmask)
    m = mask.float()
    return -(lp * m).sum(1) / m.sum(1).clamp(min=1)
