"""Real-model readiness without a GPU: small Qwen3, Qwen2 and Llama models built from configs, saved with
save_pretrained into a temporary HF cache, and loaded through the `model=` hub options offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from torch import nn
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

from projected_grpo import memory
from projected_grpo.adapter import adapter_modules, folded, set_fold_train, wrap_model
from projected_grpo.config import DEFAULT_TARGETS
from projected_grpo.env.problems import embedded_problems
from projected_grpo.env.prompts import plain_prompt, render_prompt
from projected_grpo.model import build_model
from projected_grpo.pergrad import grouped_grads
from projected_grpo.sampler import sample
from projected_grpo.tokenizer import CHAT_TEMPLATE, build_tokenizer
from projected_grpo.tokens import completion_nll, encode_completion, encode_prompt, pack, render_chat
from tests.conftest import LEETCODE_SAMPLE, REPO, compose
from tests.test_adapter import randomize_knobs

THINK = "<think>\n\n</think>\n\n"
# ChatML plus Qwen3's rule: enable_thinking=false closes an empty think block after the assistant header
QWEN3_TEMPLATE = CHAT_TEMPLATE + "{% if add_generation_prompt and enable_thinking is defined and not enable_thinking %}" \
    f"{THINK}" + "{% endif %}"  # fmt: skip
ARCHS = {  # name -> (config class, model class, extra config, chat template or None)
    "qwen3": (Qwen3Config, Qwen3ForCausalLM, {"head_dim": 16}, QWEN3_TEMPLATE),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM, {}, CHAT_TEMPLATE),
    "llama": (LlamaConfig, LlamaForCausalLM, {}, None),
}
COMMIT = "0" * 40


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """An HF hub cache with local/tiny-{qwen3,qwen2,llama} (snapshot dirs + refs/main), built from configs."""
    root = tmp_path_factory.mktemp("hf") / "hub"
    tok = build_tokenizer(2048, tmp_path_factory.mktemp("tokcache"))
    dirs = {}
    for name, (cfg_cls, model_cls, extra, template) in ARCHS.items():
        cfg = cfg_cls(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                      tie_word_embeddings=True, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                      bos_token_id=None, **extra)  # fmt: skip
        torch.manual_seed(0)
        model = model_cls(cfg)
        repo = root / f"models--local--tiny-{name}"
        snap = repo / "snapshots" / COMMIT
        model.save_pretrained(snap)
        tok.chat_template = template
        tok.save_pretrained(snap)
        (repo / "refs").mkdir(parents=True)
        (repo / "refs" / "main").write_text(COMMIT)
        dirs[name] = snap
    return root, dirs


def load(dirs, name, cache_dir, *overrides):
    cfg = compose(["model=qwen3_0_6b", f"model.hub_id={dirs[name]}", "model.dtype=float32", "model.device=cpu",
                   *overrides])  # fmt: skip
    return build_model(cfg.model, cache_dir)


@pytest.mark.parametrize("name", list(ARCHS))
def test_adapter_wraps_every_target_and_zero_knobs_reproduce_the_base(hub, cache_dir, name):
    # kills: lm_head wrapped too, a target suffix dropped, a nonzero knob init
    _, dirs = hub
    model, tok = load(dirs, name, cache_dir)
    assert type(model).__name__ == ARCHS[name][1].__name__
    targets = [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and n.split(".")[-1] in DEFAULT_TARGETS]
    ids = torch.tensor([encode_prompt(tok, render_prompt(embedded_problems()[0], None))[:64]])
    with torch.no_grad():
        base = model(input_ids=ids).logits
    wrapped = wrap_model(model, DEFAULT_TARGETS, cache_dir)
    assert wrapped == targets and len(wrapped) == 7 * 2  # q k v o gate up down, every layer (kills a dropped suffix)
    assert sorted(adapter_modules(model)) == sorted(targets) and "lm_head" not in wrapped
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, base)  # knobs at zero: bit-identical


@pytest.mark.parametrize("name", list(ARCHS))
def test_folded_sampler_equals_unfolded_sampling(hub, cache_dir, name):
    # kills: fold() without the knobs, or with delta_s_hack left out (folded sampling = the base model's)
    _, dirs = hub
    model, tok = load(dirs, name, cache_dir)
    wrap_model(model, DEFAULT_TARGETS, cache_dir)
    randomize_knobs(model, scale=0.3)
    prompts = [encode_prompt(tok, render_prompt(p, None))[:40] for p in embedded_problems()[:3]]
    unfolded = sample(model, prompts, 12, tok.eos_token_id, tok.pad_token_id, 1.0, torch.Generator().manual_seed(1))
    with folded(model):
        got = sample(model, prompts, 12, tok.eos_token_id, tok.pad_token_id, 1.0, torch.Generator().manual_seed(1))
    assert got == unfolded
    with torch.no_grad():  # and the knobs matter, so the equality above is not vacuous
        for m in adapter_modules(model).values():
            m.delta_s.zero_()
            m.delta_s_hack.zero_()
    base = sample(model, prompts, 12, tok.eos_token_id, tok.pad_token_id, 1.0, torch.Generator().manual_seed(1))
    assert base != unfolded


def test_prompts_use_the_models_chat_template_and_enable_thinking(hub, cache_dir):
    _, dirs = hub
    messages = render_prompt(embedded_problems()[0], None)
    _, tok = load(dirs, "qwen3", cache_dir)
    assert render_chat(tok, messages).endswith("<|im_start|>assistant\n" + THINK)  # enable_thinking off by default
    _, tok = load(dirs, "qwen3", cache_dir, "model.enable_thinking=true")
    assert render_chat(tok, messages).endswith("<|im_start|>assistant\n")  # kills: the option never reaches it
    _, tok = load(dirs, "llama", cache_dir)
    assert tok.chat_template is None and render_chat(tok, messages) == plain_prompt(messages)
    assert plain_prompt(messages).endswith("SOLUTION:\n")


@pytest.mark.parametrize("fold", [False, True])
@pytest.mark.parametrize("name", ["qwen3", "llama"])
def test_grad_checkpointing_gives_the_same_delta_s_gradients(hub, cache_dir, name, fold):
    # checkpointing must change no δS gradient: neither the per-completion capture (its hooks run again in the
    # recomputed forward) nor .grad. Kills: fold/capture mistakes that only show under recompute. (use_reentrant=True
    # also passes: transformers makes the inputs require grad.) The Trainer's own switch runs in the llama case of
    # test_two_step_run_on_the_shared_sample_trains. fold: the folded training forward (adapter._FoldedKnob, its
    # knob gradient computed in the recomputed backward)
    _, dirs = hub
    model, tok = load(dirs, name, cache_dir)
    wrap_model(model, DEFAULT_TARGETS, cache_dir)
    set_fold_train(model, fold)
    randomize_knobs(model, scale=0.1)
    p = embedded_problems()[1]
    prompts = [encode_prompt(tok, render_prompt(p, None))] * 2
    comps = [encode_completion(tok, "```python\nx = 1\n```"), encode_completion(tok, "no code")]
    ids, attn, cmask = pack(prompts, comps, tok.pad_token_id)
    out = []
    for ckpt in (False, True):
        if ckpt:  # what the Trainer does for trainer.grad_checkpointing=true
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        model.train()
        with grouped_grads(model, batch=2) as store:
            completion_nll(model, ids, attn, cmask).sum().backward()
        out.append(({n: g.clone() for n, g in store.grads.items()},
                    {n: m.delta_s.grad.clone() for n, m in adapter_modules(model).items()}))  # fmt: skip
        model.zero_grad(set_to_none=True)
    assert model.is_activation_checkpointing
    for a, b in zip(out[0], out[1]):
        assert a.keys() == b.keys() and len(a) == 14
        assert all(torch.allclose(a[n], b[n], atol=1e-6, rtol=1e-4) for n in a)


def test_memory_exact_parts_match_the_wrapped_model(hub, cache_dir):
    # kills: U, Vh counted as one d_out x d_in matrix; the KV cache without its K and V factor
    _, dirs = hub
    model, _ = load(dirs, "qwen3", cache_dir)
    wrap_model(model, DEFAULT_TARGETS, cache_dir)
    mem = memory.estimate(model, DEFAULT_TARGETS, torch.float32, batch_sample=3, batch_train=2, prompt_tokens=10,
                          max_new_tokens=6, grad_checkpointing=False)  # fmt: skip
    mods = adapter_modules(model).values()
    frozen = {id(p): p for p in model.parameters() if not p.requires_grad}
    assert mem.weights == sum(p.numel() * p.element_size() for p in frozen.values())
    assert mem.adapter_usv == sum(b.numel() * b.element_size() for m in mods for b in (m.U, m.S, m.Vh))
    assert mem.kv_cache == 2 * 2 * 3 * 2 * 16 * 16 * 4  # layers x (K, V) x batch x kv heads x 16 positions x hd x 4
    on = memory.estimate(model, DEFAULT_TARGETS, torch.float32, batch_sample=3, batch_train=2, prompt_tokens=10,
                         max_new_tokens=6, grad_checkpointing=True)  # fmt: skip
    assert on.activations < mem.activations and on.activations_other == mem.activations
    # the shared-prompt backward: the prompt on 1 row + 2 completions x 6 tokens, plus each completion row's prompt
    # K/V, repeated to the 4 query heads (2 layers x 2 rows x 10 positions x (K, V) x 4 heads x hd 16 x 4 bytes).
    # activation_bytes is linear in tokens. kills: the prompt counted once per completion (== packed), the prompt
    # K/V left out or counted at the 2 kv heads
    shared = memory.estimate(model, DEFAULT_TARGETS, torch.float32, batch_sample=3, batch_train=2, prompt_tokens=10,
                             max_new_tokens=6, grad_checkpointing=False, prompt_rows=1)  # fmt: skip
    per_token = mem.activations // (2 * 16)
    assert shared.activations == per_token * (1 * 10 + 2 * 6) + 2 * 2 * 10 * 2 * 4 * 16 * 4
    assert shared.activations_other == on.activations  # the flipped setting (checkpointing) runs packed


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ARCHS))
def test_two_step_run_on_the_shared_sample_trains(hub, tmp_path, name):
    if not LEETCODE_SAMPLE.exists():
        pytest.skip(f"{LEETCODE_SAMPLE} absent: the shared developer data is not mounted")
    root, _ = hub
    run = tmp_path / "run"
    # llama: checkpointed layers (they drop the K/V cache the shared-prompt backward reads: off with them)
    extra = ["trainer.grad_checkpointing=true", "trainer.shared_prompt_backward=false"] if name == "llama" else []
    cmd = [sys.executable, "train.py", "model=qwen3_0_6b", f"model.hub_id=local/tiny-{name}", "model.dtype=float32",
           "model.device=cpu", f"env.source={LEETCODE_SAMPLE}", "trainer.steps=2", "trainer.max_new_tokens=16",
           "trainer.group=4", "trainer.prompts_per_step=1", "trainer.eval_prompts_per_mode=1", "trainer.lr=0.1",
           "vhack.n_pairs=12", f"hydra.run.dir={run}", *extra]  # fmt: skip
    envv = {**os.environ, "HF_HUB_CACHE": str(root), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    r = subprocess.run(cmd, check=False, cwd=REPO, capture_output=True, text=True, timeout=900, env=envv)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["problems"]["train"]["total"] > 0 and summary["problems"]["heldout"]["total"] > 0
    from projected_grpo import checkpoint

    knobs = checkpoint.load(run / checkpoint.CKPT_NAME)["knobs"]
    assert len(knobs) == 14 and any(float(ds.abs().max()) > 0 for ds, _ in knobs.values())  # it trained


def test_memory_cli_prints_both_hub_models(capsys):
    # `python -m projected_grpo.memory` (README, Memory): both hub models from their published configs on the meta
    # device; with checkpointing off the 0.6B's backward is the shared-prompt one, below its packed batch.
    # kills: the CLI's config import broken (it imported a helper that had moved), shared-prompt rows ignored
    assert memory.main([]) == 0
    out = capsys.readouterr().out
    assert "Qwen/Qwen3-0.6B" in out and "Qwen/Qwen3-4B" in out
    assert memory.main(["trainer.shared_prompt_backward=false"]) == 0
    packed = capsys.readouterr().out

    def act_off(text):  # the 0.6B block's activations with checkpointing off, GiB
        return float(next(ln for ln in text.splitlines() if "grad_checkpointing=off" in ln).split()[2])

    assert act_off(out) < act_off(packed)
