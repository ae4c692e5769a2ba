import os
import tempfile
from pathlib import Path

import pytest

pytest_plugins = ["tests.slurm_fixture"]

# Offline, always; one cache dir per test session (inherited by subprocesses).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("PROJECTED_GRPO_CACHE", tempfile.mkdtemp(prefix="pg_test_cache_"))

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
LEETCODE_SAMPLE = SHARED / "data" / "leetcode_medhard_sample.jsonl"


def compose(overrides=()):
    """The composed train config (Hydra compose API), as the entrypoint would see it."""
    from projected_grpo.config import compose_train

    return compose_train(overrides)


@pytest.fixture
def cache_dir(tmp_path):
    return tmp_path / "cache"


def random_qwen3(seed=0, vocab=97, layers=2):
    """A small seeded Qwen3 for adapter tests (no tokenizer needed)."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    cfg = Qwen3Config(
        vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=128,
        tie_word_embeddings=True,
    )  # fmt: skip
    torch.manual_seed(seed)
    return Qwen3ForCausalLM(cfg).eval()
