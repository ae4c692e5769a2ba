"""GPU memory of a run, computed from the model's shapes and the trainer config (printed by `trainer.steps=0`).

Exact (from the shapes): base weights in the model dtype; the adapter per wrapped Linear (U [d_out, r] and
Vh [r, d_in] in the model dtype, S [r] float32, r = min(d_out, d_in)); the knobs delta_s, delta_s_hack [r] float32
with their gradients and AdamW's two moments; the sampler's static KV cache (layers x 2 x batch x kv_heads x
(prompt + max_new_tokens) x head_dim, model dtype) at the larger of the training and eval sampling batches.

Estimates (what autograd keeps for one GRPO backward of `group` completions; see ``activation_bytes``): the
decoder activations, with and without trainer.grad_checkpointing, and the float32 log-softmax over the vocabulary
on the completion tokens. The packed batch runs group x (prompt + completion) tokens; the shared-prompt backward
(trainer.shared_prompt_backward, not with checkpointing or route2) runs the prompt once per source row plus the
group's completion tokens, and every completion row's attention also keeps the prompt's K/V. Works on a model
built on the meta device (no weights needed), so the figures for a hub model can be computed from its config alone (``python -m projected_grpo.memory`` prints Qwen3-0.6B and Qwen3-4B).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from projected_grpo.evaluate import EVAL_SAMPLES

GIB = 1024**3


def dtype_bytes(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _targets(model: nn.Module, target_suffixes) -> list[tuple[str, int, int]]:
    """(name, d_out, d_in) of every Linear the adapter wraps (or has wrapped)."""
    from projected_grpo.adapter import AntiPaSTOLinear

    out = []
    for name, m in model.named_modules():
        if isinstance(m, AntiPaSTOLinear) or (isinstance(m, nn.Linear) and name.split(".")[-1] in set(target_suffixes)):
            out.append((name, m.out_features, m.in_features))
    return out


@dataclass
class Memory:
    """Bytes per item; `rows()` gives (item, GiB, how) for printing."""

    weights: int
    adapter_usv: int  # U, S, Vh of every wrapped module
    knobs_and_adam: int  # delta_s, delta_s_hack, their grads, AdamW exp_avg and exp_avg_sq (float32)
    kv_cache: int
    activations: int  # one backward of `group` completions, as configured (checkpointing or not)
    activations_other: int  # the same with trainer.grad_checkpointing flipped
    logits: int
    n_modules: int
    grad_checkpointing: bool

    @property
    def total(self) -> int:
        return self.weights + self.adapter_usv + self.knobs_and_adam + max(self.kv_cache, self.activations + self.logits)

    def rows(self) -> list[tuple[str, float, str]]:
        ck = "on" if self.grad_checkpointing else "off"
        other = "off" if self.grad_checkpointing else "on"
        return [
            ("base weights", self.weights / GIB, "exact"),
            (f"adapter U,S,Vh ({self.n_modules} modules)", self.adapter_usv / GIB, "exact"),
            ("knobs + grads + AdamW", self.knobs_and_adam / GIB, "exact"),
            ("sampler KV cache", self.kv_cache / GIB, "exact, at the larger sampling batch"),
            (f"activations, grad_checkpointing={ck}", self.activations / GIB, "estimate, one prompt's group"),
            (f"activations, grad_checkpointing={other}", self.activations_other / GIB, "estimate (not used)"),
            ("log-softmax over the vocabulary", self.logits / GIB, "estimate, float32, completion tokens"),
            ("peak (weights + adapter + max(KV, backward))", self.total / GIB, "estimate"),
        ]


def activation_bytes(cfg, r_per_layer: int, tokens: int, dtype_size: int, checkpointing: bool) -> int:
    """Tensors autograd saves for a backward over `tokens` (= group x sequence length) tokens, per decoder layer:
    attention 2h (norm in/out) + 4(q+k) (q/k-norm and RoPE inputs) + 2q+k+v (SDPA inputs and output), MLP 2h + 4i
    (norm, gate, act(gate), up, their product), adapter 2 sum(r) (Vh x and the knob-scaled z of every wrapped
    module). With checkpointing only each layer's input h and the per-completion δS capture's Vh x (sum r) stay,
    plus one layer recomputed in full."""
    h, i, L = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    hd = getattr(cfg, "head_dim", None) or h // cfg.num_attention_heads
    q, kv = cfg.num_attention_heads * hd, cfg.num_key_value_heads * hd
    per_layer = 2 * h + 4 * (q + kv) + 2 * q + 2 * kv + 2 * h + 4 * i + 2 * r_per_layer  # elements per token
    if checkpointing:
        return tokens * dtype_size * (L * (h + r_per_layer) + per_layer)
    return tokens * dtype_size * L * per_layer


def estimate(model: nn.Module, target_suffixes, dtype: torch.dtype, *, batch_sample: int, batch_train: int,
             prompt_tokens: int, max_new_tokens: int, grad_checkpointing: bool,
             prompt_rows: int | None = None) -> Memory:  # fmt: skip
    """Memory of a run on `model` (real or on the meta device; wrapped or not). prompt_rows: None for the packed
    backward batch, else the shared-prompt backward with the prompt on that many rows (one per source)."""
    cfg = model.config
    b = dtype_bytes(dtype)
    knob_names = ("delta_s", "delta_s_hack")
    weights = b * sum(p.numel() for n, p in model.named_parameters()  # named_parameters: tied weights once
                      if n.rsplit(".", 1)[-1] not in knob_names and ".quarantine." not in n)  # fmt: skip
    targets = _targets(model, target_suffixes)
    adapter = knobs = 0
    for _, d_out, d_in in targets:
        r = min(d_out, d_in)
        adapter += (d_out * r + r * d_in) * b + r * 4
        knobs += 2 * r * 4 * 4  # two knobs x (value, grad, exp_avg, exp_avg_sq), float32
    L = cfg.num_hidden_layers
    r_layer = sum(min(o, i) for _, o, i in targets) // max(L, 1)
    hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    seq = prompt_tokens + max_new_tokens
    kv = L * 2 * batch_sample * cfg.num_key_value_heads * seq * hd * b
    packed = batch_train * seq  # tokens of the packed batch
    if prompt_rows is None or grad_checkpointing:
        act = activation_bytes(cfg, r_layer, packed, b, grad_checkpointing)
    else:  # shared prompt: prompt_rows x prompt + group x completion tokens, and each completion row's prompt K/V,
        # which SDPA keeps repeated to the query heads (transformers' repeat_kv: the completion pass has a mask)
        tokens = prompt_rows * prompt_tokens + batch_train * max_new_tokens
        prompt_kv = L * batch_train * prompt_tokens * 2 * cfg.num_attention_heads * hd * b
        act = activation_bytes(cfg, r_layer, tokens, b, False) + prompt_kv
    act_other = activation_bytes(cfg, r_layer, packed, b, not grad_checkpointing)  # flipped: packed either way
    logits = batch_train * max_new_tokens * cfg.vocab_size * (4 + 4 + b)  # float copy, log_softmax, model logits
    return Memory(weights, adapter, knobs, kv, act, act_other, logits, len(targets), grad_checkpointing)


def for_run(model: nn.Module, cfg, prompt_tokens: int) -> Memory:
    """The estimate for a composed train config (the `trainer.steps=0` summary)."""
    from projected_grpo.model import DTYPES

    t = cfg.trainer
    from projected_grpo.config import ProjectionMode, teacher_per_group

    batch_sample = max(t.prompts_per_step * (t.group - teacher_per_group(cfg)), t.eval_prompts_per_mode * len(cfg.reward_mode.modes) * EVAL_SAMPLES)  # one eval split at a time
    shared = t.shared_prompt_backward and cfg.projection.mode != ProjectionMode.route2  # route2 keeps the packed batch
    rows = (2 if teacher_per_group(cfg) else 1) if shared else None  # a prompt row per source: student, teacher
    return estimate(model, list(cfg.model.target_suffixes), DTYPES[cfg.model.dtype.value], batch_sample=batch_sample,
                    batch_train=t.group, prompt_tokens=prompt_tokens, max_new_tokens=t.max_new_tokens,
                    grad_checkpointing=bool(t.grad_checkpointing), prompt_rows=rows)  # fmt: skip


def format_table(mem: Memory) -> list[str]:
    unit, scale = ("GiB", 1.0) if mem.total >= GIB else ("MiB", 1024.0)
    return [f"  {name:48s} {gib * scale:8.2f} {unit}  ({how})" for name, gib, how in mem.rows()]


# Published configs (config.json on the hub) of the two hub models the project documents, for the CLI below.
QWEN3 = {
    "Qwen/Qwen3-0.6B": {"hidden_size": 1024, "intermediate_size": 3072, "num_hidden_layers": 28,
                        "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936,
                        "tie_word_embeddings": True},
    "Qwen/Qwen3-4B": {"hidden_size": 2560, "intermediate_size": 9728, "num_hidden_layers": 36,
                      "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936,
                      "tie_word_embeddings": True},
}  # fmt: skip


def main(argv=None) -> int:
    """python -m projected_grpo.memory [overrides]: the table for Qwen3-0.6B and Qwen3-4B (meta device, no weights)
    at the trainer settings their model yaml chooses (plus overrides), for a 1200-token prompt (the shared sample's
    longest prompt is 1177 tokens under the tiny tokenizer; Qwen's tokenizer is similar or shorter)."""
    import sys

    from transformers import Qwen3Config, Qwen3ForCausalLM

    from projected_grpo.config import compose_train, validate

    overrides = list(sys.argv[1:] if argv is None else argv)
    for option in ("qwen3_0_6b", "qwen3_4b"):
        cfg = compose_train([f"model={option}", *overrides])
        validate(cfg)
        with torch.device("meta"):
            model = Qwen3ForCausalLM(Qwen3Config(**QWEN3[cfg.model.hub_id]))
        mem = for_run(model, cfg, prompt_tokens=1200)
        t = cfg.trainer
        print(f"{cfg.model.hub_id} ({cfg.model.dtype.value}; group {t.group}, prompts_per_step {t.prompts_per_step}, "
              f"max_new_tokens {t.max_new_tokens}, eval_prompts_per_mode {t.eval_prompts_per_mode}, prompt 1200 tokens)")
        print("\n".join(format_table(mem)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
