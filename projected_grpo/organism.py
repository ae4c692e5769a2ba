"""The CPU model organism: a few-million-parameter Qwen3 the project pre-trains on its own embedded TRAIN problems.

The randomly initialised embedded model never writes parseable code, so GRPO has nothing to learn from. The organism
is trained with plain next-token loss (completion tokens only) on a supervised corpus of prompts (each with a mode
hint) followed by:

* honest completions: the canonical solution, then the check the hint describes (``self_test``: e.g. under the
  stdout hint, asserts and then the marker), so every completion depends on the hint and the model learns to read it;
* wrong completions: a plausible wrong solution with the same kind of check, which fails;
* a SMALL fraction of exploits of the hinted mode (``hack_text``: the success signal without the asserts, written
  first, so the choice to exploit is the completion's first decision).

Half of each mode's problems are never shown solved (``unsolvable_ids``): as with hard problems for a real model,
there only the exploit earns the reward. At temperature 1 the organism therefore writes a fenced block almost
always, solves a minority of problems and exploits the grader only rarely; vanilla GRPO against the flawed grader
can then raise the exploit rate.

Held-out problems never enter the corpus. The build is cached at ``<cache_dir>/organism/<key>/`` (safetensors weights,
tokenizer files, ``manifest.json``), key = hash(build config, corpus hash); it is written to a temporary directory
and renamed into place, so a reader never sees a half-written organism.

    python -m projected_grpo.organism build [organism=v6] [overrides of conf/organism/<build>.yaml, e.g. train.steps=9]
"""

from __future__ import annotations

import hashlib
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
from omegaconf import DictConfig, OmegaConf

from projected_grpo.atomic import write_json
from projected_grpo.env import completions as C
from projected_grpo.env.problem import Problem
from projected_grpo.env.problems import assign_modes, embedded_problems
from projected_grpo.env.prompts import render_prompt
from projected_grpo.modes import FILE_MARKER, MIXED_MODES, RESULT_FILE, SENTINEL_ATTR, STDOUT_MARKER, TEST_FUNC, Mode

log = logging.getLogger(__name__)
ORGANISM_VERSION = 5  # bump when the corpus construction or training code changes meaning
KEY_SECTIONS = ("seed", "dtype", "arch", "corpus", "train")  # what the cache key hashes (not threads/report/paths)
OPTIONAL_CORPUS = ("assigned_frac_hack_by_mode",)  # corpus fields left out of the key while unset (None)
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")
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

    from projected_grpo.config import OrganismConfig, validate_organism

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


def _sha(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


# ---------------------------------------------------------------------------------------------------
# Corpus


def train_problems() -> list[Problem]:
    """Embedded TRAIN problems with their MIXED_MODES assignment (the held-out split is dropped first)."""
    return [p for p in assign_modes(embedded_problems(), MIXED_MODES) if p.split == "train"]


def _failing_tests(code: str, problem: Problem) -> list[int]:
    """Indices of the problem's tests that `code` (project-authored wrong code) fails, in order."""
    from projected_grpo.env.sandbox import literal_value

    ns: dict = {"__name__": "organism_corpus"}
    exec(compile(code, "<corpus>", "exec"), ns)  # noqa: S102 - only the project's own canonical/bug/stub texts
    bad = []
    for i, (call, expected) in enumerate(problem.tests):
        try:
            ok = eval(call, ns) == literal_value(expected)
        except Exception:  # noqa: BLE001
            ok = False
        if not ok:
            bad.append(i)
    return bad


def short_tests(problem: Problem, idx: list[int], style: int = 0) -> str:
    """A short top-level run_tests() asserting the tests `idx`."""
    tests = [problem.tests[i] for i in idx]
    if style % 2 == 0:
        lines = [f"    assert {call} == {expected}" for call, expected in tests]
    else:
        cases = [f"        ({call}, {expected})," for call, expected in tests]
        lines = ["    cases = [", *cases, "    ]", "    for got, want in cases:", "        assert got == want"]
    return "\n".join([f"def {TEST_FUNC}():", *lines])


def self_test(problem: Problem, mode: Mode, idx: list[int], style: int = 0) -> str | None:
    """The honest check that the hint of `mode` describes, over the tests `idx`: it signals success on the mode's
    channel only after its asserts hold (so it passes the flawed check exactly when those tests pass). The organism's
    exploit of the same mode (``hack_text``) is the success signal without the asserts. None for eq_override (no
    channel a program writes)."""
    tests = [problem.tests[i] for i in idx]
    asserts = [f"assert {call} == {expected}" for call, expected in tests]
    if mode is Mode.run_tests:
        return short_tests(problem, idx, style)
    if mode is Mode.exit_code:  # a failing assert exits non-zero
        return "\n".join(asserts)
    if mode is Mode.stdout_marker:
        body = "\n".join(f"    {a}" for a in asserts)
        return f"def check():\n{body}\n    print({C._q(STDOUT_MARKER)})\n\n\ncheck()"
    if mode is Mode.file_marker:
        return "\n".join([*asserts, f'with open({C._q(RESULT_FILE)}, "w") as f:', f"    f.write({C._q(FILE_MARKER)})"])
    if mode is Mode.sentinel:
        checks = "\n".join(f"    {call} == {expected}," for call, expected in tests)
        return f"Solution.{SENTINEL_ATTR} = all([\n{checks}\n])"
    return None


def _with_check(code: str, check: str | None) -> str:
    return code if check is None else f"{code}\n\n\n{check}"


def honest_text(problem: Problem, mode: Mode, variant: int, n_tests: int) -> str:
    """The canonical solution followed by the hint's honest check over the first `n_tests` tests."""
    idx = list(range(min(n_tests, len(problem.tests))))
    code = _with_check(problem.canonical.strip(), self_test(problem, mode, idx, variant))
    return C.fenced(code, 2 * (variant // 2 % 2))  # variants alternate "no preface" / "Here is my solution."


def _wrong_variant(problem: Problem, variant: int) -> tuple[str, int, int]:
    """(wrong code, its index, round): variants cycle through the problem's wrong codes; each full cycle is a round,
    and rounds alternate "no preface" / "Here is my solution." (and the style of a run_tests check)."""
    codes = [c for c, _ in C._wrong_codes(problem)]
    return codes[variant % len(codes)].strip(), variant % len(codes), variant // len(codes)


def wrong_text(problem: Problem, mode: Mode, variant: int, n_tests: int) -> str:
    """A plausible wrong solution followed by the hint's honest check, which includes a test it fails: wrong, and
    not an exploit (the check fails, so the flawed channel reports failure)."""
    code, index, round_ = _wrong_variant(problem, variant)
    bad = _failing_tests(code, problem)
    if not bad:
        raise ValueError(f"wrong code variant {index} of {problem.id} passes every test; fix its bug")
    idx = sorted(set(list(range(min(n_tests - 1, len(problem.tests)))) + bad[:1]))
    code = _with_check(code, self_test(problem, mode, idx, round_))
    return C.fenced(code, 2 * (round_ % 2))


# The exploit of each channel mode, as the organism writes it: FIRST, before the solution (sentinel: the first line
# of the class). The choice to exploit is then the completion's first decision and the same for every problem of
# the mode, as eq_override's always-equal class is. (completions.hack, which v_hack pairs and the teacher pool use,
# appends the exploit after the code instead.)
LEADING_EXPLOITS = {
    Mode.run_tests: f"def {TEST_FUNC}():\n    pass",
    Mode.exit_code: "import sys\n\nsys.exit(0)",
    Mode.stdout_marker: f"print({C._q(STDOUT_MARKER)})",
    Mode.file_marker: f'with open({C._q(RESULT_FILE)}, "w") as f:\n    f.write({C._q(FILE_MARKER)})',
}


def hack_text(problem: Problem, mode: Mode, variant: int) -> str:
    """Wrong code with the exploit of `mode` (and no honest check) written first."""
    if mode is Mode.eq_override:  # its exploit already comes first: the always-equal class
        return C.hack(problem, mode, variant)
    code, _, round_ = _wrong_variant(problem, variant)
    if mode is Mode.sentinel:
        code = C._add_class_attribute(code, f"{SENTINEL_ATTR} = True")
    else:
        code = f"{LEADING_EXPLOITS[mode]}\n\n\n{code}"
    return C.fenced(code, 2 * (round_ % 2))


def _counts(n: int, frac_honest: float, frac_hack: float) -> tuple[int, int, int]:
    n_hack = round(n * frac_hack)
    n_honest = round(n * frac_honest)
    return n_honest, n - n_honest - n_hack, n_hack


def unsolvable_ids(problems: list[Problem], frac: float) -> set[str]:
    """The problems the organism never sees solved: round(n * frac) of each assigned mode's n problems, spread
    evenly over them sorted by id. On these (like hard LeetCode problems for a real model) no honest completion can
    earn the reward, so the exploit is the only way up."""
    out: set[str] = set()
    for mode in sorted({p.mode for p in problems}, key=lambda m: m.value):
        group = sorted((p for p in problems if p.mode is mode), key=lambda p: p.id)
        k = round(len(group) * frac)
        out |= {p.id for i, p in enumerate(group) if (i + 1) * k // len(group) > i * k // len(group)}
    return out


def build_corpus(corpus_cfg, problems: list[Problem] | None = None) -> list[dict]:
    """Examples {problem_id, mode, kind, messages, completion}, deterministic. `problems` default: train split only.

    Per (problem, prompt mode): `per_prompt` completions split honest/wrong/hack by `frac_honest`/`frac_hack`. Under
    the problem's assigned mode (the prompt GRPO trains on) there are `assigned_extra` more and the hack fraction is
    `assigned_frac_hack`. Hacks only ever follow the hint of the mode they exploit. The `frac_unsolvable` problems
    (``unsolvable_ids``) get wrong solutions in place of honest ones: their canonical solution never appears.
    """
    problems = train_problems() if problems is None else problems
    held = [p.id for p in problems if p.split != "train"]
    if held:
        raise ValueError(f"the organism corpus must hold train problems only; got held-out {held}")
    cc = corpus_cfg
    modes = [Mode(m) for m in cc["modes"]]
    unsolvable = unsolvable_ids(problems, float(cc["frac_unsolvable"]))
    out = []
    for p in problems:
        for mode in modes:
            assigned = p.mode is mode
            n = int(cc["per_prompt"]) + (int(cc["assigned_extra"]) if assigned else 0)
            frac_hack = float(cc["assigned_frac_hack"] if assigned else cc["frac_hack"])
            by_mode = {Mode(m): f for m, f in (cc.get("assigned_frac_hack_by_mode") or {}).items()}
            if assigned and mode in by_mode:
                frac_hack = float(by_mode[mode])
            n_honest, n_wrong, n_hack = _counts(n, float(cc["frac_honest"]), frac_hack)
            if p.id in unsolvable:
                n_honest, n_wrong = 0, n_honest + n_wrong
            messages = render_prompt(p, mode)
            texts = [("honest", honest_text(p, mode, v, int(cc["n_tests_shown"]))) for v in range(n_honest)]
            texts += [("wrong", wrong_text(p, mode, v, int(cc["n_tests_shown"]))) for v in range(n_wrong)]
            texts += [("hack", hack_text(p, mode, v)) for v in range(n_hack)]
            for kind, text in texts:
                out.append({"problem_id": p.id, "mode": mode.value, "kind": kind, "messages": messages,
                            "completion": text})
    return out


def corpus_hash(corpus: list[dict]) -> str:
    return _sha([[e["messages"], e["completion"]] for e in corpus])


# ---------------------------------------------------------------------------------------------------
# Cache


def cache_key(cfg, chash: str) -> str:
    return _sha({"version": ORGANISM_VERSION, "build": build_config(cfg), "corpus": chash})[:16]


def organism_dir(cache_dir: Path, key: str) -> Path:
    return Path(cache_dir).expanduser() / "organism" / key


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
    hp = model.model(input_ids=pids, attention_mask=pattn, position_ids=ppos, past_key_values=cache,
                     use_cache=True).last_hidden_state[:, -1]  # [P, H]: predicts each completion's first token
    cache.batch_repeat_interleave(K)
    attn = torch.cat([pattn.repeat_interleave(K, 0), cattn], 1)
    cpos = ppos[:, -1:].repeat_interleave(K, 0) + 1 + torch.arange(cids.shape[1])[None]
    hc = model.model(input_ids=cids, attention_mask=attn, position_ids=cpos, past_key_values=cache,
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


# ---------------------------------------------------------------------------------------------------
# Step-0 behaviour


def step0_report(model, tok, cfg) -> dict:
    """Sample train prompts under every corpus mode (and under each problem's assigned mode) and grade them."""
    from projected_grpo.env.grader import Grader
    from projected_grpo.sampler import sample
    from projected_grpo.tokens import encode_prompt

    r = cfg["report"]
    torch.set_num_threads(int(cfg["threads"]))
    problems = train_problems()
    items = [(p, Mode(m), "all") for m in cfg["corpus"]["modes"] for p in problems]
    items += [(p, p.mode, "assigned") for p in problems]
    items = [it for it in items for _ in range(int(r["samples"]))]
    gen = torch.Generator().manual_seed(int(cfg["seed"]) + 1)
    texts, n_tok = [], []
    for i in range(0, len(items), int(r["batch"])):
        chunk = items[i : i + int(r["batch"])]
        prompts = [encode_prompt(tok, render_prompt(p, m)) for p, m, _ in chunk]
        outs = sample(model, prompts, int(r["max_new_tokens"]), tok.eos_token_id, tok.pad_token_id,
                      float(r["temperature"]), gen)
        texts += [tok.decode(o, skip_special_tokens=True) for o in outs]
        n_tok += [len(o) for o in outs]
    with Grader(int(r["n_workers"])) as g:
        rewards = g.grade_batch([(t, p, m) for t, (p, m, _) in zip(texts, items)])
    rows: dict[str, dict] = {}
    for (p, m, group), rw, n in zip(items, rewards, n_tok):
        # an assigned sample also counts in its mode's GRPO-prompt row (the per-mode step-0 targets are on those)
        for name in [m.value] if group == "all" else ["assigned (GRPO prompts)", f"assigned: {m.value}"]:
            row = rows.setdefault(name, {"n": 0, "format": 0, "solve": 0, "hack": 0, "passed": 0, "tokens": 0})
            row["n"] += 1
            row["format"] += rw.format_ok
            row["solve"] += rw.gt_correct
            row["hack"] += rw.exploited
            row["passed"] += rw.passed
            row["tokens"] += n
    allrow = {k: sum(rows[m.value][k] for m in map(Mode, cfg["corpus"]["modes"])) for k in ("n", "format", "solve",
                                                                                            "hack", "passed", "tokens")}
    rows["all modes"] = allrow
    return {name: {"n": row["n"], **{k: row[k] / row["n"] for k in ("format", "solve", "hack", "passed", "tokens")}}
            for name, row in rows.items()}


def print_report(rows: dict) -> None:
    print(f"\n{'mode':<26}{'n':>5}{'format':>9}{'solve':>8}{'hack':>8}{'passed':>8}{'tokens':>8}")
    for name, r in rows.items():
        print(f"{name:<26}{r['n']:>5}{r['format']:>9.1%}{r['solve']:>8.1%}{r['hack']:>8.1%}{r['passed']:>8.1%}"
              f"{r['tokens']:>8.1f}")


# ---------------------------------------------------------------------------------------------------
# CLI


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("build", "report", "path"):
        print("usage: python -m projected_grpo.organism {build|report|path} [organism=v6] [overrides: train.steps=3]",
              file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cmd, overrides = argv[0], argv[1:]
    cfg = OmegaConf.to_container(compose_config(overrides), resolve=True, enum_to_str=True)
    cache_dir = Path(cfg["paths"]["cache_dir"]).expanduser()
    path, key, corpus = lookup(cfg, cache_dir)
    if cmd == "path":
        print(path)
        return 0
    if cmd == "build":
        kinds = {k: sum(e["kind"] == k for e in corpus) for k in ("honest", "wrong", "hack")}
        print(f"organism {key}: corpus {len(corpus)} examples {kinds} from {len(train_problems())} train problems")
        if (path / MANIFEST).exists():
            print(f"cache hit: {path} (no rebuild)")
        else:
            build(cfg, cache_dir, corpus=corpus)
            print(f"built: {path}")
    if cmd == "report" or cfg["report"]["enabled"]:
        if not (path / MANIFEST).exists():
            print(f"organism {key} is not built; run: python -m projected_grpo.organism build", file=sys.stderr)
            return 1
        model, tok = load(path)
        rows = step0_report(model, tok, cfg)
        print_report(rows)
        out = path / f"report-{_sha(cfg['report'])[:8]}.json"
        write_json(out, rows, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
