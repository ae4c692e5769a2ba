"""The embedded offline model and tokenizer, and the `trainer.steps=0` entrypoint."""

import subprocess
import sys

import torch

from projected_grpo.model import build_model
from projected_grpo.tokenizer import IM_END, PAD
from tests.conftest import REPO, compose

TOKENIZER_FINGERPRINT = """
import hashlib, sys
from projected_grpo.tokenizer import build_tokenizer
tok = build_tokenizer(int(sys.argv[1]), None)
print(hashlib.sha256(tok.backend_tokenizer.to_str().encode()).hexdigest())
"""


def test_tokenizer_identical_across_fresh_processes():
    outs = [
        subprocess.run([sys.executable, "-c", TOKENIZER_FINGERPRINT, "2048"], capture_output=True, text=True,
                       check=True, timeout=120, cwd=REPO).stdout.strip()
        for _ in range(2)
    ]  # fmt: skip
    assert len(outs[0]) == 64 and outs[0] == outs[1]


def test_tiny_model_and_tokenizer(cache_dir):
    cfg = compose()
    model, tok = build_model(cfg.model, cache_dir)
    assert type(model).__name__ == "Qwen3ForCausalLM" and model.config.vocab_size == len(tok) == 2048
    assert tok.eos_token == IM_END and tok.pad_token == PAD and tok.pad_token_id != tok.eos_token_id
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)
    assert text.endswith("<|im_start|>assistant\n")
    code = "```python\nclass Solution:\n    def f(self, x: int) -> int:\n        return x + 1\n```"
    assert tok.decode(tok(code)["input_ids"]) == code  # byte-level BPE round-trips code exactly
    model2, _ = build_model(cfg.model, cache_dir)  # seeded init: the same weights every time
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), model2.state_dict().values()))
    assert list((cache_dir / "tokenizer").glob("bpe2048_*.json"))  # cached


def test_steps0_prints_summary_offline(tmp_path):
    r = subprocess.run(
        [sys.executable, "train.py", "trainer.steps=0", f"hydra.run.dir={tmp_path}", "vhack.n_pairs=12"],
        check=False, cwd=REPO, capture_output=True, text=True, timeout=600,
        env={**__import__("os").environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert "model: tiny" in r.stdout and "wrapped modules: 28" in r.stdout
    assert "trainable knob parameters: " in r.stdout and f"run dir: {tmp_path}" in r.stdout


def test_k1_and_k12_share_one_cached_extraction(tmp_path):
    """Issue acceptance: `trainer.steps=0 vhack.k=1` then `vhack.k=12` load one cached extraction."""
    env = {**__import__("os").environ, "PROJECTED_GRPO_CACHE": str(tmp_path / "cache")}
    out = []
    for k in (1, 12):
        r = subprocess.run(
            [sys.executable, "train.py", "trainer.steps=0", f"vhack.k={k}", "vhack.n_pairs=12",
             f"hydra.run.dir={tmp_path / str(k)}"],
            check=False, cwd=REPO, capture_output=True, text=True, timeout=600, env=env,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr[-2000:]
        out.append(next(line for line in r.stdout.splitlines() if line.startswith("v_hack:")))
    assert out[0].startswith("v_hack: extracted ") and out[1].startswith("v_hack: loaded ")
    assert out[0].split()[2] == out[1].split()[2]  # the same file
    assert len(list((tmp_path / "cache" / "vhack").glob("*.safetensors"))) == 1


def test_hub_branch_loads_a_local_pretrained_dir(tmp_path, cache_dir):
    """model.hub_id takes a hub id or a local save_pretrained dir (offline); dtype and padding side are applied."""
    cfg = compose()
    model, tok = build_model(cfg.model, cache_dir)
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    hub = compose([f"model.hub_id={tmp_path / 'm'}", "model.dtype=bfloat16"])
    loaded, tok2 = build_model(hub.model, cache_dir)
    assert loaded.dtype == torch.bfloat16 and tok2.padding_side == "left" and tok2.pad_token is not None
    ref = model.state_dict()
    assert all(torch.equal(v.to(torch.bfloat16), ref[k].to(torch.bfloat16)) for k, v in loaded.state_dict().items())
