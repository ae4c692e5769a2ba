import subprocess
import sys

import pytest

from projected_grpo.config import ConfigError, validate
from tests.conftest import REPO, compose

# (override, key the error must name)
SEMANTIC = [
    ("projection.overshoot=-1", "projection.overshoot"),
    ("vhack.k=0", "vhack.k"),
    ("vhack.k=13", "vhack.k"),
    ("vhack.drop_bottom_frac=1.0", "vhack.drop_bottom_frac"),
    ("vhack.drop_bottom_frac=-0.1", "vhack.drop_bottom_frac"),
    ("trainer.group=1", "trainer.group"),
    ("trainer.mix_ratio=1.5", "trainer.mix_ratio"),
    ("trainer.steps=-1", "trainer.steps"),
    ("trainer.updates_per_batch=0", "trainer.updates_per_batch"),
    ("trainer.eval_prompts_per_mode=0", "trainer.eval_prompts_per_mode"),
    ("intervention.monitor.probe_flag_rate=1.0", "intervention.monitor.probe_flag_rate"),
    ("intervention.monitor.probe_calib_prompts=0", "intervention.monitor.probe_calib_prompts"),
]
TYPED = [
    ("projection.gate=sideways", "projection.gate"),
    ("vhack.source=bogus", "vhack.source"),
    ("vhack.modes=[nope]", "vhack.modes"),
    ("reward_mode.modes=[nope]", "reward_mode.modes"),
    ("model.dtype=float7", "model.dtype"),
    ("model.no_such_key=1", "model.no_such_key"),
]


def test_default_config_composes_and_validates():
    cfg = compose()
    validate(cfg)
    for section in ("model", "projection", "vhack", "reward_mode", "trainer"):
        assert section in cfg
    assert cfg.model.name == "tiny" and cfg.projection.mode.value == "erase"
    assert [m.value for m in cfg.reward_mode.modes] == ["run_tests", "sentinel", "stdout_marker", "file_marker"]


@pytest.mark.parametrize("override,key", SEMANTIC)
def test_semantic_errors_name_the_key(override, key):
    cfg = compose([override])
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(cfg)


@pytest.mark.parametrize("override,key", TYPED)
def test_typed_errors_name_the_key(override, key):
    with pytest.raises(Exception) as e:
        compose([override])
    assert key in str(e.value)


def test_sweep_syntax_parses():
    # the contract: `python train.py projection=route vhack.k=1,5,12 -m`
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(["projection=route", "vhack.k=1,5,12"])
    batches = BasicSweeper.split_arguments(parsed, None)
    assert [list(job) for job in batches[0]] == [["projection=route", f"vhack.k={k}"] for k in (1, 5, 12)]
    for k in (1, 5, 12):
        validate(compose(["projection=route", f"vhack.k={k}"]))


@pytest.mark.parametrize("override", ["vhack.k=13", "projection.gate=sideways", "trainer.mix_ratio=1.5"])
def test_cli_rejects_bad_override_fast(override):
    r = subprocess.run(
        [sys.executable, "train.py", override], check=False, cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert r.returncode != 0
    assert override.split("=")[0] in r.stderr


def test_cli_help_lists_groups():
    r = subprocess.run([sys.executable, "train.py", "--help"], check=False, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0
    for line in ("model: organism, qwen3_0_6b, qwen3_4b, tiny", "projection: erase, none, route, route2, trusted", "vhack: default"):
        assert line in r.stdout
    assert "reward_mode: eq_override, exit_code, file_marker, mixed, none, run_tests, sentinel, stdout_marker" in r.stdout


def test_control_seeds_follow_the_training_seed():
    # kills: vhack.seed fixed at 0 (one random basis for every seed) and route2's A_q seed decoupled from it
    for seed in (41, 45):
        cfg = compose([f"trainer.seed={seed}", "arm=route2_grad"])
        assert cfg.vhack.seed == seed and cfg.projection.route2.seed == seed
        assert compose([f"trainer.seed={seed}", "arm=erase_random"]).vhack.seed == seed
    assert compose(["trainer.seed=41", "vhack.seed=7"]).projection.route2.seed == 7  # still settable


def test_vhack_cache_key_depends_on_the_seed_only_for_shuffled(monkeypatch):
    """real/nonhack files are shared by all training seeds (no re-extraction per seed); shuffled's pairs differ."""
    # kills: the seed in every cache key (a re-extraction of the same real V for every training seed)
    from types import SimpleNamespace

    from projected_grpo import vhack

    model = SimpleNamespace()
    cfg = lambda seed: compose([f"trainer.seed={seed}"])
    meta = lambda seed, src: vhack.extraction_meta(cfg(seed), model, [], src, base="b")
    monkeypatch.setattr(vhack.store, "model_dtype", lambda m: "float32")
    assert meta(41, "real") == meta(42, "real") and meta(41, "nonhack") == meta(42, "nonhack")
    assert meta(41, "shuffled")["seed"] == "41" and meta(42, "shuffled")["seed"] == "42"
