"""Where a built organism lives: the build config (composed from conf/organism/, validated), the cache key
(build config + corpus hash), its directory and the loader; building it is pretrain.py."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from projected_grpo.organism.corpus import _sha, build_corpus, corpus_hash

ORGANISM_VERSION = 5  # bump when the corpus construction or training code changes meaning
KEY_SECTIONS = ("seed", "dtype", "arch", "corpus", "train")  # what the cache key hashes (not threads/report/paths)
OPTIONAL_CORPUS = ("assigned_frac_hack_by_mode",)  # corpus fields left out of the key while unset (None)

MANIFEST = "manifest.json"
WEIGHTS = "model.safetensors"


# ---------------------------------------------------------------------------------------------------
# Config


def compose_config(overrides=()) -> DictConfig:
    """conf/organism/<build>.yaml (default: default.yaml, the v5 build; `organism=v6` picks conf/organism/v6.yaml)
    with Hydra overrides applied (compose API), typed by OrganismConfig and validated: an unknown key, a wrong type
    or a bad value fails here, naming the key."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from projected_grpo.config import CONF_DIR, OrganismConfig, validate_organism

    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()

    def scoped(o: str) -> str:  # the primary config lands under the `organism` package
        head = o[: len(o) - len(o.lstrip("+~"))]
        body = o[len(head) :]
        return o if body.startswith("organism.") else f"{head}organism.{body}"

    choices = [o for o in overrides if o.startswith("organism=")]  # the build: a config of conf/organism/
    if len(choices) > 1:
        raise ValueError(f"pick one organism build, got {choices}")
    choice = choices[0].split("=", 1)[1] if choices else "default"
    rest = [scoped(o) for o in overrides if o not in choices]
    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        cfg = compose(config_name=None, overrides=[f"+organism={choice}", *rest])
    typed = OmegaConf.merge(OmegaConf.structured(OrganismConfig), cfg.organism)
    validate_organism(typed)
    return typed


def build_config(cfg) -> dict:
    """The part of the organism config that determines the weights (plain data, resolved)."""
    c = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True) if isinstance(cfg, DictConfig) else dict(cfg)
    out = {k: c[k] for k in KEY_SECTIONS}
    # an unset optional corpus field (added after v5) is not hashed, so older builds keep their keys
    out["corpus"] = {k: v for k, v in out["corpus"].items() if not (k in OPTIONAL_CORPUS and v is None)}
    return out


# ---------------------------------------------------------------------------------------------------
# Cache


def cache_key(cfg, chash: str) -> str:
    return _sha({"version": ORGANISM_VERSION, "build": build_config(cfg), "corpus": chash})[:16]


def organism_dir(cache_dir: Path, key: str) -> Path:
    return Path(cache_dir).expanduser() / "organism" / key


def load(path: Path):
    """(model, tokenizer) of a built organism directory, model in eval mode."""
    from transformers import PreTrainedTokenizerFast, Qwen3ForCausalLM

    from projected_grpo.tokenizer import CHAT_TEMPLATE

    tok = PreTrainedTokenizerFast.from_pretrained(str(path), padding_side="left")
    tok.chat_template = CHAT_TEMPLATE
    model = Qwen3ForCausalLM.from_pretrained(str(path), torch_dtype=torch.float32)
    model.config._attn_implementation = "sdpa"
    return model.eval(), tok


def lookup(cfg, cache_dir: Path) -> tuple[Path, str, list[dict]]:
    """(directory, key, corpus) for this build config; the directory exists only if it is built."""
    corpus = build_corpus(cfg["corpus"])
    key = cache_key(cfg, corpus_hash(corpus))
    return organism_dir(cache_dir, key), key, corpus
