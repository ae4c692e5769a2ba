"""A lean batched sampler: KV cache, one forward per token, no per-token framework overhead.

Use it under `adapter.folded(model)` so the knobs cost nothing. Sampling uses an explicit
torch.Generator (its state is checkpointed), temperature scaling and torch.multinomial's draws (`draw`);
temperature=0 is greedy. Finished rows keep emitting pad and are masked.

Two decode paths, same tokens:
  * lean (Qwen3-style decoders: full attention, RMSNorm, q/k-norm, RoPE, SwiGLU): the decoder is run
    directly from its weights with a static preallocated KV cache, one boolean mask (none in the decode when no row
    is padded) and one RoPE table computed once per call, F.rms_norm, SDPA with GQA, a direct mm per Linear on the
    residual rows [B T, H], under inference_mode; no HF mask building, cache objects or module dispatch per token;
    each distinct prompt is prefilled once and its KV cache copied to the rows that repeat it (the G samples of a
    prompt). Linear layers are called through their weights when they are plain or folded
    (`AntiPaSTOLinear.folded`), through the module otherwise (so an unfolded adapter still counts).
  * generic (any causal LM): the model's own forward with a DynamicCache, used when the lean path does
    not recognise the architecture or a module carries forward hooks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import DynamicCache


@torch.inference_mode()  # no_grad's tokens, without autograd's view/version bookkeeping on every small op
def sample(
    model,
    prompts: list[list[int]],
    max_new_tokens: int,
    eos_id: int,
    pad_id: int,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    share_prompts: bool = True,
) -> list[list[int]]:
    """prompts: token id lists -> completions (token ids, ending in eos if it was produced). share_prompts: the lean
    path prefills each distinct prompt once (repeated prompts share its KV cache); False prefills every row."""
    device = next(model.parameters()).device
    B, L = len(prompts), max(len(p) for p in prompts)
    ids = torch.full((B, L), pad_id, dtype=torch.long)
    attn = torch.zeros((B, L), dtype=torch.long)
    for b, p in enumerate(prompts):  # left padding
        ids[b, L - len(p) :] = torch.tensor(p, dtype=torch.long)
        attn[b, L - len(p) :] = 1
    ids, attn = ids.to(device), attn.to(device)
    lean = _LeanQwen3.build(model)
    if lean is not None:
        out = lean.decode(model, ids, attn, max_new_tokens, eos_id, pad_id, temperature, generator, share_prompts)
    else:
        out = _decode_hf(model, ids, attn, max_new_tokens, eos_id, pad_id, temperature, generator)
    return [_strip(row, eos_id) for row in out.tolist()]


def _decode_hf(model, ids, attn, max_new_tokens, eos_id, pad_id, temperature, generator) -> torch.Tensor:
    """The generic path: the model's forward with a DynamicCache -> out [B, max_new_tokens]."""
    B = ids.shape[0]
    pos = (attn.cumsum(1) - 1).clamp(min=0)
    cache = DynamicCache()
    out = torch.full((B, max_new_tokens), pad_id, dtype=torch.long, device=ids.device)
    done = torch.zeros(B, dtype=torch.bool, device=ids.device)
    inp = ids
    for t in range(max_new_tokens):
        logits = model(input_ids=inp, attention_mask=attn, position_ids=pos, cache=cache, use_cache=True).logits
        nxt = draw(logits[:, -1].float(), temperature, generator)  # [B]
        nxt = torch.where(done, torch.full_like(nxt, pad_id), nxt)
        out[:, t] = nxt
        done |= nxt == eos_id
        if bool(done.all()):
            break
        inp = nxt[:, None]
        attn = torch.cat([attn, torch.ones_like(attn[:, :1])], 1)
        pos = pos[:, -1:] + 1
    return out


def _distinct_rows(ids: torch.Tensor, attn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ids, attn [B, L] -> (u [U]: the first row of each distinct prompt, src [B]: row b's index into u)."""
    first: dict[tuple, int] = {}
    src = [first.setdefault((tuple(i), tuple(a)), len(first)) for i, a in zip(ids.tolist(), attn.tolist())]
    u = [0] * len(first)
    for b, j in reversed(list(enumerate(src))):
        u[j] = b
    return torch.tensor(u, device=ids.device), torch.tensor(src, device=ids.device)


def _strip(row: list[int], eos_id: int) -> list[int]:
    """Tokens up to and including eos; without eos, the full (max-length) row."""
    return row[: row.index(eos_id) + 1] if eos_id in row else row


def draw(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> torch.Tensor:
    """logits [B, V] -> token ids [B]: argmax(p / q), q ~ Exp(1) i.i.d. (the exponential race), p the tempered softmax.
    This is how torch.multinomial(p, 1) draws (same random numbers, same tokens; tests/test_speed_paths.py), with its
    input check done on the B picked values instead of all B x V; x / 1.0 is exact, so temperature 1 skips the
    division. Non-finite logits raise, greedy included."""
    if temperature == 0:
        tok, scores = logits.argmax(-1), logits
    else:
        scores = torch.softmax(logits if temperature == 1 else logits / temperature, -1)  # [B, V]
        tok = (scores / torch.empty_like(scores).exponential_(generator=generator)).argmax(-1)
    # multinomial's check, at the cost of B values: a NaN or +inf logit, or a row of -inf, makes its softmax row NaN
    # (and greedy argmax picks the NaN / inf), so the picked score is non-finite exactly when the row is invalid
    bad = ~torch.isfinite(scores.gather(-1, tok[:, None]).squeeze(-1))  # [B]
    if bool(bad.any()):
        raise RuntimeError(
            f"sampling: non-finite logits (NaN, +inf or all -inf) in rows {bad.nonzero().flatten().tolist()} "
            "of this decode step; the policy's forward produced them (diverged knobs or corrupt weights)"
        )
    return tok


# ---------------------------------------------------------------------------------------------------
# The lean decoder


def _rms(x: torch.Tensor, w: torch.Tensor | None, eps: float) -> torch.Tensor:
    if x.dtype == torch.float32:
        return F.rms_norm(x, (x.shape[-1],), w, eps)
    xf = x.float()  # as Qwen3RMSNorm: normalise in float32, scale in the input dtype
    y = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)
    return y if w is None else w * y


def _signed_sin(sin: torch.Tensor) -> torch.Tensor:
    """sin [..., hd] -> [-sin_1, sin_2] (halves), so that rotate_half(x) * sin == x.roll(hd / 2) * signed_sin exactly
    (a sign flip commutes with rounding)."""
    h = sin.shape[-1] // 2
    return torch.cat((-sin[..., :h], sin[..., h:]), -1)


def _rot(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """RoPE, x * cos + rotate_half(x) * sin, rotate_half(x) = [-x_2, x_1], in 4 ops instead of 7."""
    return x * cos + x.roll(x.shape[-1] // 2, -1) * signed_sin


def _mm(x: torch.Tensor, wt: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """x [N, d_in] @ wt [d_in, d_out] (+ b): the mm/addmm that F.linear dispatches to for a 2-D input, called directly."""
    return torch.mm(x, wt) if b is None else torch.addmm(b, x, wt)


class _Lin:
    """A Linear's forward on rows x [N, d_in]: through its weights when plain or folded, else through the module."""

    __slots__ = ("b", "m", "wt")

    def __init__(self, m: nn.Module):
        plain = type(m) is nn.Linear or bool(getattr(m, "folded", False))
        self.wt, self.b, self.m = (m.weight.t(), m.bias, None) if plain else (None, None, m)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return _mm(x, self.wt, self.b) if self.m is None else self.m(x)


FUSE_MAX_PARAMS = 100_000_000  # concatenate q/k/v and gate/up weights per call below this model size


class _Cat:
    """Several Linears on the same input: one matmul over their concatenated weights (copied once per sample
    call) when all are plain/folded and `fuse`, else one call each. Returns the outputs concatenated."""

    def __init__(self, mods: list[nn.Module], fuse: bool):
        self.lins = [_Lin(m) for m in mods]
        self.wt = self.b = None
        if fuse and all(lin.m is None for lin in self.lins):
            self.wt = torch.cat([m.weight for m in mods]).t()  # [d_in, sum d_out], F.linear's layout
            if all(lin.b is not None for lin in self.lins):
                self.b = torch.cat([lin.b for lin in self.lins])
            elif any(lin.b is not None for lin in self.lins):
                self.wt = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.wt is None:
            return torch.cat([lin(x) for lin in self.lins], -1)
        return _mm(x, self.wt, self.b)


class _LeanQwen3:
    def __init__(self, model):
        cfg, inner = model.config, model.model
        self.rotary = inner.rotary_emb
        self.embed = inner.embed_tokens.weight
        self.norm_w, self.eps = inner.norm.weight, inner.norm.variance_epsilon
        self.head = _Lin(model.lm_head)
        self.nh, self.nkv = cfg.num_attention_heads, cfg.num_key_value_heads
        self.hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        fuse = sum(p.numel() for p in model.parameters()) <= FUSE_MAX_PARAMS
        self.layers = []
        for layer in inner.layers:
            a, m = layer.self_attn, layer.mlp
            qkv = _Cat([a.q_proj, a.k_proj, a.v_proj], fuse)
            wqk = torch.cat([a.q_norm.weight.expand(self.nh, -1), a.k_norm.weight.expand(self.nkv, -1)])
            self.layers.append((
                layer.input_layernorm.weight, qkv, wqk, _Lin(a.o_proj), layer.post_attention_layernorm.weight,
                _Cat([m.gate_proj, m.up_proj], fuse), _Lin(m.down_proj), m.act_fn,
            ))  # fmt: skip

    @classmethod
    def build(cls, model) -> _LeanQwen3 | None:
        """The lean decoder for a recognised Qwen3 model, else None (the generic path)."""
        cfg, inner = getattr(model, "config", None), getattr(model, "model", None)
        if cfg is None or inner is None or getattr(cfg, "model_type", None) != "qwen3":
            return None
        if any(t != "full_attention" for t in (getattr(cfg, "layer_types", None) or [])):
            return None
        if getattr(cfg, "attention_dropout", 0.0) and model.training:
            return None
        if any(m._forward_hooks or m._forward_pre_hooks for m in model.modules()):
            return None  # someone observes the modules' forward: run it
        try:
            return cls(model)
        except AttributeError:
            return None

    def forward(self, x, cos, signed_sin, mask, K, V, s: int) -> torch.Tensor:
        """x [B, T, H] at cache columns s..s+T -> hidden [B, T, H]; writes K/V [n_layers][B, nkv, S, hd]. The
        residual stream runs as rows [B T, H], so every Linear is one direct mm."""
        B, T, H = x.shape
        hd, eps = self.hd, self.eps
        nh, nkv = self.nh, self.nkv
        x = x.reshape(B * T, H)
        for i, (w_in, qkv, wqk, o_p, w_post, gate_up, d_p, act) in enumerate(self.layers):
            y = qkv(_rms(x, w_in, eps))  # [B T, (nh + 2 nkv) hd]
            qk, v = y[:, : (nh + nkv) * hd].view(B, T, nh + nkv, hd), y[:, (nh + nkv) * hd :]
            # q_norm and k_norm in one normalisation, RoPE on q and k at once
            qk = _rot((_rms(qk, None, eps) * wqk).transpose(1, 2), cos, signed_sin)  # [B, nh + nkv, T, hd]
            K[i][:, :, s : s + T] = qk[:, nh:]
            V[i][:, :, s : s + T] = v.view(B, T, nkv, hd).transpose(1, 2)
            a = F.scaled_dot_product_attention(
                qk[:, :nh], K[i][:, :, : s + T], V[i][:, :, : s + T], attn_mask=mask, enable_gqa=nh != nkv
            )  # [B, nh, T, hd]
            x = x + o_p(a.transpose(1, 2).reshape(B * T, nh * hd))
            gu = gate_up(_rms(x, w_post, eps))
            x = x + d_p(act(gu[:, : gu.shape[-1] // 2]) * gu[:, gu.shape[-1] // 2 :])
        return x.view(B, T, H)

    def decode(self, model, ids, attn, max_new_tokens, eos_id, pad_id, temperature, generator,
               share_prompts: bool = True) -> torch.Tensor:  # fmt: skip
        B, L = ids.shape
        S, dev, dt = L + max_new_tokens, ids.device, self.embed.dtype
        K = [torch.zeros(B, self.nkv, S, self.hd, device=dev, dtype=dt) for _ in self.layers]
        V = [torch.zeros_like(k) for k in K]
        pos = (attn.cumsum(1) - 1).clamp(min=0)
        pos = torch.cat([pos, pos[:, -1:] + 1 + torch.arange(max_new_tokens, device=dev)], 1)  # [B, S]
        cos, sin = self.rotary(self.embed[:1], pos)  # [B, S, hd]
        cos, sin = cos[:, None], _signed_sin(sin[:, None])  # [B, 1, S, hd]; sin signed for _rot
        valid = torch.ones(B, S, dtype=torch.bool, device=dev)
        valid[:, :L] = attn.bool()
        # prefill: causal + key padding; a padding query attends to itself (finite, never read)
        causal = torch.ones(L, L, dtype=torch.bool, device=dev).tril()
        mask = (causal & valid[:, None, :L]) | torch.eye(L, dtype=torch.bool, device=dev)
        # shared prompt prefixes: each distinct prompt row is prefilled once, its K/V and last hidden copied to the
        # rows that repeat it (the G samples of a prompt)
        u, src = _distinct_rows(ids, attn) if share_prompts else (torch.arange(B, device=dev), None)
        Ku = [k[u, :, :L] for k in K] if src is not None else K  # [U, nkv, L, hd] (copies) or the cache itself
        Vu = [v[u, :, :L] for v in V] if src is not None else V
        x = self.forward(F.embedding(ids[u], self.embed), cos[u, :, :L], sin[u, :, :L], mask[u, None], Ku, Vu, 0)
        if src is not None:
            for i in range(len(K)):
                K[i][:, :, :L], V[i][:, :, :L] = Ku[i][src], Vu[i][src]
            x = x[src]  # [B, L, H]
        out = torch.full((B, max_new_tokens), pad_id, dtype=torch.long, device=dev)
        done = torch.zeros(B, dtype=torch.bool, device=dev)
        padded = not bool(valid.all())  # no left padding: a decode query sees every cached column, no mask needed
        for t in range(max_new_tokens):
            logits = self.head(_rms(x[:, -1], self.norm_w, self.eps))
            nxt = draw(logits.float(), temperature, generator)  # [B]
            nxt = torch.where(done, torch.full_like(nxt, pad_id), nxt)
            out[:, t] = nxt
            done |= nxt == eos_id
            if t + 1 == max_new_tokens or bool(done.all()):
                break
            s = L + t
            x = self.forward(
                F.embedding(nxt[:, None], self.embed), cos[:, :, s : s + 1], sin[:, :, s : s + 1],
                valid[:, None, None, : s + 1] if padded else None, K, V, s,
            )  # fmt: skip
        return out
