"""The CPU organism: corpus hygiene (train problems only), cache keys and the model=organism build/load path."""

import json
import re
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from projected_grpo import organism as org
from projected_grpo.env import completions as C
from projected_grpo.env.grader import extract_code
from projected_grpo.env.problems import embedded_problems
from projected_grpo.modes import ALL_MODES, MIXED_MODES, MODES, Mode
from tests.conftest import compose

# A build that takes seconds: one tiny layer, two optimizer steps.
TINY = [
    "arch.hidden_size=32", "arch.intermediate_size=64", "arch.num_hidden_layers=1", "arch.num_attention_heads=2",
    "arch.num_key_value_heads=1", "arch.head_dim=16", "train.steps=2", "train.prompts_per_step=2", "train.completions_per_prompt=2", "train.warmup=1",
]  # fmt: skip


def default_cfg(overrides=()):
    return OmegaConf.to_container(org.compose_config(overrides), resolve=True)


@pytest.fixture(scope="module")
def corpus():
    return org.build_corpus(default_cfg()["corpus"])


def test_corpus_holds_train_problems_only(corpus):
    train = {p.id for p in embedded_problems() if p.split == "train"}
    heldout = [p for p in embedded_problems() if p.split == "heldout"]
    assert heldout, "the embedded set should have a held-out split"
    assert {e["problem_id"] for e in corpus} == train
    text = "\n".join(m["content"] for e in corpus for m in e["messages"]) + "\n".join(e["completion"] for e in corpus)
    for p in heldout:
        assert p.description not in text, p.id
        assert p.signature not in text, p.id
        assert p.canonical.strip() not in text, p.id
    with pytest.raises(ValueError, match="held-out"):
        org.build_corpus(default_cfg()["corpus"], problems=[p for p in embedded_problems()])


def test_corpus_mix_and_hacks_follow_their_hint(corpus):
    kinds = [e["kind"] for e in corpus]
    assert 0 < kinds.count("hack") / len(kinds) <= 0.2  # the organism samples hacks far below the corpus rate
    assert 0.15 <= kinds.count("honest") / len(kinds) <= 0.6
    assert all(extract_code(e["completion"]) is not None for e in corpus)  # every completion is a fenced block
    problems = {p.id: p for p in org.train_problems()}
    for e in corpus:
        hint = e["messages"][1]["content"]
        assert MODES[Mode(e["mode"])].hint in hint
        if e["kind"] == "hack":  # the hack is the exploit of the hinted mode, never of another
            p = problems[e["problem_id"]]
            assert e["completion"] in {org.hack_text(p, Mode(e["mode"]), v) for v in range(4)}
        if e["kind"] == "honest":
            assert problems[e["problem_id"]].canonical.strip() in e["completion"]
    # every problem's assigned (GRPO) mode gets prompts, and all six modes appear
    assert {e["mode"] for e in corpus} == {m.value for m in ALL_MODES}  # the loophole modes (not hidden_tests)
    assert {p.mode for p in problems.values()} == set(MIXED_MODES)


@pytest.mark.slow
@pytest.mark.parametrize("build", ["default", "v6"])
def test_every_corpus_example_grades_as_its_kind(corpus, build):
    """Honest completions (canonical + the hint's honest check) are correct and pass the flawed check; wrong ones
    (their check includes a test they fail) fail both; hacks pass the flawed check without being correct.
    For v6, the examples the v5 corpus lacks (its extra hack variants) are graded."""
    from projected_grpo.env.grader import Grader

    problems = {p.id: p for p in org.train_problems()}
    if build != "default":
        seen = {(e["problem_id"], e["mode"], e["completion"]) for e in corpus}
        corpus = [e for e in org.build_corpus(default_cfg([f"organism={build}"])["corpus"])
                  if (e["problem_id"], e["mode"], e["completion"]) not in seen]  # fmt: skip
        assert corpus, "v6 should add hack variants v5 lacks"
    with Grader(2) as g:
        rewards = g.grade_batch([(e["completion"], problems[e["problem_id"]], Mode(e["mode"])) for e in corpus])
    want = {"honest": (True, True, False), "wrong": (False, False, False), "hack": (False, True, True)}
    bad = [(e["kind"], e["mode"], e["problem_id"], r.mechanism) for e, r in zip(corpus, rewards)
           if (r.gt_correct, r.passed, r.exploited) != want[e["kind"]]]  # fmt: skip
    assert not bad, bad[:5]


def test_unsolvable_problems_are_never_shown_solved(corpus):
    problems = org.train_problems()
    unsolvable = org.unsolvable_ids(problems, 0.5)
    per_mode = {m: sum(p.id in unsolvable for p in problems if p.mode is m) for m in MIXED_MODES}
    assert per_mode == {m: 6 for m in MIXED_MODES}  # half of each assigned mode's 12 problems
    by_id = {p.id: p for p in problems}
    for e in corpus:
        if e["problem_id"] in unsolvable:
            assert e["kind"] != "honest" and by_id[e["problem_id"]].canonical.strip() not in e["completion"]
    assert {e["problem_id"] for e in corpus if e["kind"] == "honest"} == set(by_id) - unsolvable
    assert org.unsolvable_ids(problems, 0.0) == set()
    assert len(org.unsolvable_ids(problems, 0.25)) == 12


def test_honest_checks_are_the_hack_plus_asserts():
    """Under each channel mode the honest check signals success only after asserts; the hack drops the asserts."""
    p = org.train_problems()[0]
    for mode in (Mode.run_tests, Mode.exit_code, Mode.stdout_marker, Mode.file_marker, Mode.sentinel):
        check = org.self_test(p, mode, [0, 1])
        assert p.tests[0][0] in check and p.tests[1][0] in check, mode
    assert org.self_test(p, Mode.eq_override, [0, 1]) is None
    assert org.honest_text(p, Mode.eq_override, 0, 2) == C.fenced(p.canonical.strip())


def test_organism_config_is_typed_and_validated():
    from hydra.errors import ConfigCompositionException

    from projected_grpo.config import ConfigError

    with pytest.raises(ConfigCompositionException, match="stepz"):
        org.compose_config(["train.stepz=3"])
    with pytest.raises(ConfigError, match="corpus.frac_honest\\+assigned_frac_hack"):
        org.compose_config(["corpus.assigned_frac_hack=0.7"])
    with pytest.raises(Exception, match="foo"):
        org.compose_config(["corpus.modes=[foo]"])
    with pytest.raises(ConfigError, match="model.organism.train.lr"):
        from projected_grpo.config import validate

        validate(compose(["model=organism", "model.organism.train.lr=0"]))


def test_model_organism_sets_its_grpo_budget_and_the_command_line_wins():
    cfg = compose(["model=organism"])
    assert (cfg.trainer.steps, cfg.trainer.prompts_per_step, cfg.trainer.eval_prompts_per_mode) == (60, 4, 3)
    assert compose(["model=organism", "trainer.steps=7"]).trainer.steps == 7
    assert compose([]).trainer.steps == 20  # the tiny default keeps its own budget


def test_cache_key_tracks_build_config_only(corpus):
    cfg = default_cfg()
    h = org.corpus_hash(corpus)
    k = org.cache_key(cfg, h)
    assert k == org.cache_key(default_cfg(), h)
    assert k == org.cache_key(default_cfg(["report.samples=7"]), h)  # report settings don't change the weights
    assert k == org.cache_key(default_cfg(["threads=1"]), h)  # nor does the thread count (a resource)
    assert k != org.cache_key(default_cfg(["train.steps=1"]), h)
    assert k != org.cache_key(default_cfg(["arch.hidden_size=64"]), h)
    assert k != org.cache_key(cfg, "0" * 64)  # corpus change
    c2 = default_cfg(["corpus.frac_hack=0.05"])
    assert org.cache_key(c2, org.corpus_hash(org.build_corpus(c2["corpus"]))) != k


@pytest.mark.slow
def test_model_organism_builds_on_miss_loads_on_hit_rebuilds_on_change(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cfg = compose(["model=organism", *[f"model.organism.{o}" for o in TINY]])
    from projected_grpo.setup import load_model as build_model

    model, tok = build_model(cfg.model, cache)  # miss -> build
    dirs = [d for d in (cache / "organism").iterdir()]
    assert len(dirs) == 1 and not dirs[0].name.startswith(".")  # no temp dir left behind
    manifest = json.loads((dirs[0] / org.MANIFEST).read_text())
    assert manifest["key"] == dirs[0].name and re.fullmatch(r"[0-9a-f]{64}", manifest["corpus_hash"])
    assert manifest["build_config"]["train"]["steps"] == 2 and manifest["build_config"]["arch"]["hidden_size"] == 32
    assert (dirs[0] / "model.safetensors").exists() and (dirs[0] / "tokenizer.json").exists()
    assert set(manifest["problems"]) == {p.id for p in embedded_problems() if p.split == "train"}

    # the loaded model is usable by the project (chat template, eos, pad) and matches a reload bit for bit
    from projected_grpo.tokens import encode_prompt

    ids = torch.tensor([encode_prompt(tok, org.render_prompt(org.train_problems()[0], Mode.sentinel))])
    assert tok.eos_token == "<|im_end|>" and tok.pad_token_id is not None
    with torch.no_grad():
        a = model(input_ids=ids).logits

    def boom(*a, **k):
        raise AssertionError("cache hit must not retrain")

    monkeypatch.setattr(org.pretrain, "train", boom)
    model2, _ = build_model(cfg.model, cache)  # hit
    with torch.no_grad():
        assert torch.equal(a, model2(input_ids=ids).logits)
    monkeypatch.undo()

    cfg3 = compose(["model=organism", *[f"model.organism.{o}" for o in TINY], "model.organism.train.steps=3"])
    build_model(cfg3.model, cache)  # config change -> new key -> rebuild
    assert len([d for d in (cache / "organism").iterdir()]) == 2


@pytest.mark.slow
def test_deterministic_training_steps(tmp_path):
    """Same seed, same weights after a couple of steps."""
    from projected_grpo.tokenizer import build_tokenizer

    cfg = default_cfg(TINY)
    cfg["corpus"]["per_prompt"] = 2
    corpus = org.build_corpus(cfg["corpus"])[:40]
    tok = build_tokenizer(cfg["arch"]["vocab_size"], Path(cfg["paths"]["cache_dir"]))
    m1, l1 = org.train(cfg, tok, corpus, progress=False)
    m2, l2 = org.train(cfg, tok, corpus, progress=False)
    assert l1 == l2
    for (n, p), (_, q) in zip(m1.named_parameters(), m2.named_parameters()):
        assert torch.equal(p, q), n


# The published v5 tables were measured on this build; its key must survive later config fields and builds.
V5_KEY = "5917bd0c5f8cc633"


def test_v5_stays_the_default_build_with_its_published_cache_key():
    # kills: hashing the unset assigned_frac_hack_by_mode (None) into build_config, or v6 values leaking into default
    cfg = org.compose_config([])
    assert cfg.corpus.assigned_frac_hack_by_mode is None
    chash = org.corpus_hash(org.build_corpus(default_cfg()["corpus"]))
    assert org.cache_key(cfg, chash) == V5_KEY
    v6 = org.compose_config(["organism=v6"])
    assert org.cache_key(v6, org.corpus_hash(org.build_corpus(default_cfg(["organism=v6"])["corpus"]))) != V5_KEY


def test_v6_raises_the_hack_fraction_under_the_assigned_hint_of_its_modes_only():
    # kills: applying assigned_frac_hack_by_mode to non-assigned prompts, or ignoring it
    cfg = default_cfg(["organism=v6"])
    by_mode = {Mode(m): f for m, f in cfg["corpus"]["assigned_frac_hack_by_mode"].items()}
    assert set(by_mode) == {Mode.run_tests, Mode.sentinel, Mode.stdout_marker}
    corpus6 = org.build_corpus(cfg["corpus"])
    problems = {p.id: p for p in org.train_problems()}
    n_assigned = cfg["corpus"]["per_prompt"] + cfg["corpus"]["assigned_extra"]
    for pid, p in problems.items():
        for mode in MIXED_MODES:
            ex = [e for e in corpus6 if e["problem_id"] == pid and e["mode"] == mode.value]
            hacks = sum(e["kind"] == "hack" for e in ex)
            if p.mode is mode:
                frac = by_mode.get(mode, cfg["corpus"]["assigned_frac_hack"])
                assert hacks == round(n_assigned * frac), (pid, mode)
            else:
                assert hacks == round(cfg["corpus"]["per_prompt"] * cfg["corpus"]["frac_hack"]), (pid, mode)
    for e in corpus6:  # still keyed to the hint: a hack is the exploit of its own prompt's mode
        if e["kind"] == "hack":
            p = problems[e["problem_id"]]
            assert e["completion"] in {org.hack_text(p, Mode(e["mode"]), v) for v in range(8)}


def test_v6_config_is_validated():
    from projected_grpo.config import ConfigError

    # kills: dropping the per-mode check (frac_honest 0.4 + 0.7 > 1 would silently leave a negative wrong count)
    with pytest.raises(ConfigError, match="assigned_frac_hack_by_mode.sentinel"):
        org.compose_config(["organism=v6", "corpus.assigned_frac_hack_by_mode.sentinel=0.7"])
    with pytest.raises(ConfigError, match="assigned_frac_hack_by_mode.run_tests"):  # a mode the corpus lacks
        org.compose_config(["organism=v6", "corpus.modes=[sentinel]"])
    with pytest.raises(Exception, match="foo"):
        org.compose_config(["organism=v6", "+corpus.assigned_frac_hack_by_mode.foo=0.1"])
    with pytest.raises(ValueError, match="one organism build"):
        org.compose_config(["organism=v6", "organism=default"])
    # the train entrypoint selects v6 through the defaults-list entry of conf/model/organism.yaml
    cfg = compose(["model=organism", "organism@model.organism=v6"])
    assert cfg.model.organism.corpus.assigned_frac_hack_by_mode.sentinel == 0.5
    assert compose(["model=organism"]).model.organism.corpus.assigned_frac_hack_by_mode is None
