"""A lean batched sampler: KV cache, one forward per token, no per-token framework overhead.

Use it under `adapter.folded(model)` so the knobs cost nothing. Sampling uses an explicit
torch.Generator (its state is checkpointed), temperature scaling and plain multinomial draws;
temperature=0 is greedy. Finished rows keep emitting pad and are masked.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache


@torch.no_grad()
def sample(
    model,
    prompts: list[list[int]],
    max_new_tokens: int,
    eos_id: int,
    pad_id: int,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> list[list[int]]:
    """prompts: token id lists -> completions (token ids, ending in eos if it was produced)."""
    device = next(model.parameters()).device
    B, L = len(prompts), max(len(p) for p in prompts)
    ids = torch.full((B, L), pad_id, dtype=torch.long, device=device)
    attn = torch.zeros((B, L), dtype=torch.long, device=device)
    for b, p in enumerate(prompts):  # left padding
        ids[b, L - len(p) :] = torch.tensor(p, device=device)
        attn[b, L - len(p) :] = 1
    pos = (attn.cumsum(1) - 1).clamp(min=0)
    cache = DynamicCache()
    out = torch.full((B, max_new_tokens), pad_id, dtype=torch.long, device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    inp = ids
    for t in range(max_new_tokens):
        logits = model(input_ids=inp, attention_mask=attn, position_ids=pos, past_key_values=cache, use_cache=True).logits
        nxt = draw(logits[:, -1].float(), temperature, generator)  # [B]
        nxt = torch.where(done, torch.full_like(nxt, pad_id), nxt)
        out[:, t] = nxt
        done |= nxt == eos_id
        if bool(done.all()):
            break
        inp = nxt[:, None]
        attn = torch.cat([attn, torch.ones_like(attn[:, :1])], 1)
        pos = pos[:, -1:] + 1
    result = []
    for b in range(B):
        row = out[b].tolist()
        result.append(_strip(row, eos_id))
    return result


def _strip(row: list[int], eos_id: int) -> list[int]:
    """Tokens up to and including eos; without eos, the full (max-length) row."""
    return row[: row.index(eos_id) + 1] if eos_id in row else row


def draw(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> torch.Tensor:
    """logits [B, V] -> token ids [B]."""
    if temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits / temperature, -1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
