"""Pre-training of the organism: next-token loss on its corpus (completion tokens only), saved atomically into the
cache; load_or_build builds on a cache miss."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from projected_grpo.organism.corpus import build_corpus, corpus_hash, train_problems, unsolvable_ids
from projected_grpo.organism.report import print_report, step0_report
from projected_grpo.organism.store import (
    MANIFEST,
    ORGANISM_VERSION,
    build_config,
    cache_key,
    load,
    lookup,
    organism_dir,
)

log = logging.getLogger(__name__)


def _new_model(cfg, tok):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    a = cfg["arch"]
    config = Qwen3Config(
        vocab_size=len(tok), hidden_size=a["hidden_size"], intermediate_size=a["intermediate_size"],
        num_hidden_layers=a["num_hidden_layers"], num_attention_heads=a["num_attention_heads"],
        num_key_value_heads=a["num_key_value_heads"], head_dim=a["head_dim"],
        max_position_embeddings=a["max_position_embeddings"], rope_theta=a["rope_theta"], tie_word_embeddings=True,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None,
    )  # fmt: skip
    config._attn_implementation = "sdpa"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(cfg["seed"]))
        return Qwen3ForCausalLM(config)


def load_or_build(cfg, cache_dir: Path | None, report: bool = False):
    """Load the organism of `cfg` from the cache, building (and caching) it first on a miss. Returns (model, tok)."""
    if cache_dir is None:
        raise ValueError("the organism needs a cache_dir (paths.cache_dir) to live in")
    path, key, corpus = lookup(cfg, cache_dir)
    if (path / MANIFEST).exists():
        log.info("organism %s: cache hit at %s", key, path)
    else:
        msg = (f"organism {key} is not built yet: BUILDING it now into {path} (a few minutes on CPU; "
               f"ahead of time: python -m projected_grpo.organism build)")
        log.warning(msg)
        print(f"*** {msg}", file=sys.stderr, flush=True)
        build(cfg, cache_dir, corpus=corpus)
    model, tok = load(path)
    if report:
        print_report(step0_report(model, tok, cfg))
    return model, tok


# ---------------------------------------------------------------------------------------------------
# Training


def _encode(tok, corpus: list[dict], seq_len: int) -> list[tuple[list[int], list[list[int]]]]:
    """Corpus -> groups (prompt ids, [completion ids, ...]) sharing one prompt; completions truncated so that
    prompt + completion <= seq_len."""
    from projected_grpo.tokens import encode_completion, encode_prompt

    groups: dict[str, tuple[list[int], list[list[int]]]] = {}
    for e in corpus:
        k = json.dumps(e["messages"])
        if k not in groups:
            groups[k] = (encode_prompt(tok, e["messages"]), [])
        p = groups[k][0]
        groups[k][1].append(encode_completion(tok, e["completion"])[: max(1, seq_len - len(p))])
    return list(groups.values())


def _batch(prompts: list[list[int]], comps: list[list[list[int]]], pad_id: int):
    """Left-padded prompts [P, Lp] and right-padded completions [P*K, Lc] (K per prompt, all groups alike)."""
    lp = max(len(p) for p in prompts)
    flat = [c for cs in comps for c in cs]
    lc = max(len(c) for c in flat)
    pids = torch.full((len(prompts), lp), pad_id, dtype=torch.long)
    pattn = torch.zeros((len(prompts), lp), dtype=torch.long)
    for b, p in enumerate(prompts):
        pids[b, lp - len(p) :] = torch.tensor(p)
        pattn[b, lp - len(p) :] = 1
    cids = torch.full((len(flat), lc), pad_id, dtype=torch.long)
    cattn = torch.zeros((len(flat), lc), dtype=torch.long)
    for b, c in enumerate(flat):
        cids[b, : len(c)] = torch.tensor(c)
        cattn[b, : len(c)] = 1
    return pids, pattn, cids, cattn


def completion_loss(model, pids, pattn, cids, cattn) -> torch.Tensor:
    """Mean next-token NLL over completion tokens. Each prompt is encoded once and its KV cache (with gradient)
    is shared by its K completions; the lm head runs only on predicting positions."""
    from transformers import DynamicCache

    K = cids.shape[0] // pids.shape[0]
    ppos = (pattn.cumsum(1) - 1).clamp(min=0)
    cache = DynamicCache()
    hp = model.model(input_ids=pids, attention_mask=pattn, position_ids=ppos, cache=cache,
                     use_cache=True).last_hidden_state[:, -1]  # [P, H]: predicts each completion's first token
    cache.batch_repeat_interleave(K)
    attn = torch.cat([pattn.repeat_interleave(K, 0), cattn], 1)
    cpos = ppos[:, -1:].repeat_interleave(K, 0) + 1 + torch.arange(cids.shape[1])[None]
    hc = model.model(input_ids=cids, attention_mask=attn, position_ids=cpos, cache=cache,
                     use_cache=True).last_hidden_state  # [P*K, Lc, H]
    h = torch.cat([hp.repeat_interleave(K, 0)[:, None], hc[:, :-1]], 1)  # position t predicts cids[:, t]
    m = cattn.bool()
    logits = model.lm_head(h[m]).float()
    return torch.nn.functional.cross_entropy(logits, cids[m])


def train(cfg, tok, corpus: list[dict], progress: bool = True):
    """AdamW + warmup/cosine on completion-token NLL. A step = `prompts_per_step` prompt groups x
    `completions_per_prompt` completions drawn (seeded) from each group's completions."""
    from tqdm import tqdm

    t = cfg["train"]
    torch.set_num_threads(int(cfg["threads"]))
    model = _new_model(cfg, tok).train()
    groups = _encode(tok, corpus, int(t["seq_len"]))
    gen = torch.Generator().manual_seed(int(cfg["seed"]))
    opt = torch.optim.AdamW(model.parameters(), lr=float(t["lr"]), betas=tuple(t["betas"]),
                            weight_decay=float(t["weight_decay"]))
    steps, warm, floor = int(t["steps"]), int(t["warmup"]), float(t["min_lr_frac"])

    def lr_at(s):
        if s < warm:
            return (s + 1) / warm
        prog = (s - warm) / max(1, steps - warm)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * prog))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    P, K = int(t["prompts_per_step"]), int(t["completions_per_prompt"])
    order: list[int] = []
    pos = 0
    bar = tqdm(range(steps), desc="organism", disable=not progress, dynamic_ncols=True)
    ema = None
    for _ in bar:
        if pos + P > len(order):  # new epoch over prompt groups: a fresh seeded permutation
            order, pos = torch.randperm(len(groups), generator=gen).tolist(), 0
        idx, pos = order[pos : pos + P], pos + P
        comps = []
        for i in idx:
            cs = groups[i][1]
            pick = torch.randint(len(cs), (K,), generator=gen).tolist()
            comps.append([cs[j] for j in pick])
        loss = completion_loss(model, *_batch([groups[i][0] for i in idx], comps, tok.pad_token_id))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if float(t["grad_clip"]) > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), float(t["grad_clip"]))
        opt.step()
        sched.step()
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        bar.set_postfix(loss=f"{ema:.3f}", lr=f"{sched.get_last_lr()[0]:.2e}")
    return model.eval(), ema


def build(cfg, cache_dir: Path, corpus: list[dict] | None = None, progress: bool = True) -> Path:
    """Train the organism of `cfg` and save it atomically; returns its directory (no-op if already built)."""
    from projected_grpo.tokenizer import build_tokenizer

    corpus = build_corpus(cfg["corpus"]) if corpus is None else corpus
    chash = corpus_hash(corpus)
    key = cache_key(cfg, chash)
    final = organism_dir(cache_dir, key)
    if (final / MANIFEST).exists():
        return final
    tok = build_tokenizer(int(cfg["arch"]["vocab_size"]), Path(cache_dir).expanduser())
    t0 = time.time()
    model, final_loss = train(cfg, tok, corpus, progress=progress)
    seconds = time.time() - t0
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{key}-tmp-"))
    try:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tok.save_pretrained(str(tmp))
        kinds = {k: sum(e["kind"] == k for e in corpus) for k in ("honest", "wrong", "hack")}
        manifest = {
            "key": key, "version": ORGANISM_VERSION, "corpus_hash": chash, "build_config": build_config(cfg),
            "n_examples": len(corpus), "kinds": kinds, "problems": sorted({e["problem_id"] for e in corpus}),
            "unsolvable": sorted(unsolvable_ids(train_problems(), float(cfg["corpus"]["frac_unsolvable"]))),
            "n_params": sum(p.numel() for p in model.parameters()), "final_loss": final_loss,
            "train_seconds": round(seconds, 1), "created": time.time(),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        try:
            os.replace(tmp, final)  # atomic; fails if another builder got there first (then keep theirs)
        except OSError:
            if not (final / MANIFEST).exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("organism %s built in %.0fs -> %s", key, seconds, final)
    return final
