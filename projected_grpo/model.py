"""Model + tokenizer: the embedded offline Qwen3 (built from config, seeded) or a hub model."""

from __future__ import annotations

from pathlib import Path

import torch

from projected_grpo.tokens import set_chat_options

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"model.device={device!r} but CUDA is not available; use model.device=cpu")
    return torch.device(device)


def build_model(model_cfg, cache_dir: Path | None, organism_loader=None):
    """Returns (model, tokenizer), model in eval mode with all weights frozen by the caller's wrap.
    organism_loader: (model.organism config, cache_dir) -> (model, tok), for model.organism configs; the caller
    passes organism.load_or_build (setup.load_model does), so loading a model never imports pre-training code."""
    dtype = DTYPES[str(model_cfg.dtype.value if hasattr(model_cfg.dtype, "value") else model_cfg.dtype)]
    device = resolve_device(model_cfg.device)
    if getattr(model_cfg, "organism", None) is not None:  # the pre-trained CPU organism, built on a cache miss
        if organism_loader is None:
            raise ValueError("model.organism is set but build_model got no organism_loader; load the model with "
                             "setup.load_model(model_cfg, cache_dir) (or pass organism_loader=organism.load_or_build)")
        model, tok = organism_loader(model_cfg.organism, cache_dir)
    elif model_cfg.hub_id is None:
        model, tok = _build_tiny(model_cfg, cache_dir)
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(model_cfg.hub_id, padding_side="left")
        model = AutoModelForCausalLM.from_pretrained(model_cfg.hub_id, dtype=dtype)
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
    set_chat_options(tok, bool(model_cfg.enable_thinking))
    model = model.to(device=device, dtype=dtype).eval()
    return model, tok


def _build_tiny(model_cfg, cache_dir: Path | None):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from projected_grpo.tokenizer import build_tokenizer

    a = model_cfg.arch
    tok = build_tokenizer(a.vocab_size, cache_dir)
    config = Qwen3Config(
        vocab_size=len(tok),
        hidden_size=a.hidden_size,
        intermediate_size=a.intermediate_size,
        num_hidden_layers=a.num_hidden_layers,
        num_attention_heads=a.num_attention_heads,
        num_key_value_heads=a.num_key_value_heads,
        head_dim=a.head_dim,
        max_position_embeddings=a.max_position_embeddings,
        rope_theta=a.rope_theta,
        tie_word_embeddings=True,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=None,
    )
    config._attn_implementation = "sdpa"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(model_cfg.init_seed)
        model = Qwen3ForCausalLM(config)
    return model, tok
