"""Every experiment config composes (Hydra compose API), sweeps what it says, and every sweep point validates.

The meta-test at the bottom fails when a conf/experiment/*.yaml has no entry in EXPERIMENTS.
"""

from pathlib import Path

import pytest
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode

from projected_grpo.config import compose_train, validate
from projected_grpo.modes import MIXED_MODES
from projected_grpo.train import CONF_DIR

SEEDS = "41,42,43"
SEEDS5 = "41,42,43,44,45"  # the organism experiments: five seeds (issue #18)
ARMS = (
    "vanilla,erase_real,erase_random,erase_shuffled,erase_nonhack,route_real,route_random,route_shuffled,route_nonhack,"
    "route2_grad,route2_act"
)
MIXED = [m.value for m in MIXED_MODES]
# experiment -> (expected hydra.sweeper.params, number of jobs)
EXPERIMENTS = {
    "arms": ({"arm": ARMS, "trainer.seed": SEEDS}, 33),
    "k_ablation": ({"arm": "erase_real,route_real", "vhack.k": "1,5,12", "trainer.seed": SEEDS}, 18),
    "weak_detector": ({"arm": "vanilla,erase_real,route_real", "heldout": ",".join(MIXED), "trainer.seed": SEEDS}, 36),
    "refresh": ({"arm": "erase_real,route_real", "vhack.refresh_every": "0,2,5", "trainer.seed": SEEDS}, 18),
    "organism": ({"arm": "vanilla,erase_real,erase_random,route_real,route_random", "trainer.seed": SEEDS5}, 25),
    "organism_weak": ({"arm": "vanilla,erase_real,erase_random,route_real", "trainer.seed": SEEDS5}, 20),
    "interventions": ({"arm": "vanilla,no_loophole,erase_real,route_real,probe_screening,probe_penalty,gt_screening,"
                              "noisy70_screening,inoculation,trusted", "trainer.seed": SEEDS5}, 50),
}


def sweep_jobs(params) -> list[list[str]]:
    """The jobs Hydra's basic sweeper launches for these params (same parser, same product)."""
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()])
    return [list(job) for job in BasicSweeper.split_arguments(parsed, None)[0]]


def sweep_params(cfg) -> dict[str, str]:
    return {str(k): str(v) for k, v in cfg.hydra.sweeper.params.items()}


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_experiment_sweep_params(name):
    expected, n_jobs = EXPERIMENTS[name]
    cfg = compose_train([f"experiment={name}"], return_hydra_config=True)
    assert sweep_params(cfg) == expected
    assert cfg.hydra.mode == RunMode.MULTIRUN, "experiments must sweep without -m"
    assert len(sweep_jobs(expected)) == n_jobs


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_every_sweep_point_composes_and_validates(name):
    # every distinct point of the sweep but its seed is composed and validated, at its first seed: the seeds only
    # set trainer.seed (a scalar; that it lands is checked), and a compose costs ~1 s, so not 5x per point
    seen = set()
    for job in sweep_jobs(EXPERIMENTS[name][0]):
        point = tuple(o for o in job if not o.startswith("trainer.seed="))
        if point in seen:
            continue
        seen.add(point)
        cfg = compose_train([f"experiment={name}", *job])
        validate(cfg)
        check_job(cfg, dict(o.split("=", 1) for o in job))
    assert len(seen) == EXPERIMENTS[name][1] // len(EXPERIMENTS[name][0]["trainer.seed"].split(","))


def check_job(cfg, job: dict) -> None:
    """The swept values actually land in the composed config."""
    assert cfg.trainer.seed == int(job["trainer.seed"])
    arm = job["arm"]
    assert arm_name(cfg) == arm
    if "vhack.k" in job:
        assert cfg.vhack.k == int(job["vhack.k"])
    if "vhack.refresh_every" in job:
        assert cfg.vhack.refresh_every == int(job["vhack.refresh_every"])
    if "heldout" in job:
        others = [m for m in MIXED if m != job["heldout"]]
        assert [m.value for m in cfg.vhack.modes] == others
        assert [m.value for m in cfg.teacher.modes] == others
        assert [m.value for m in cfg.reward_mode.modes] == MIXED  # the student trains on all four


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_smoke_switch_beats_the_experiment(name):
    cfg = compose_train([f"experiment={name}", "smoke=quick"], return_hydra_config=True)
    validate(cfg)
    assert sweep_params(cfg) == EXPERIMENTS[name][0]  # same sweep, tiny jobs
    t = cfg.trainer
    assert (t.steps, t.prompts_per_step, t.group, t.max_new_tokens) == (2, 1, 4, 16)
    assert cfg.model.name == "tiny" and cfg.logger.name == "none"


def test_organism_experiment_runs_the_organism_without_a_teacher():
    cfg = compose_train(["experiment=organism", "arm=route_real", "trainer.seed=41"])
    assert cfg.model.name == "organism" and [m.value for m in cfg.reward_mode.modes] == MIXED
    assert not cfg.teacher.enabled and cfg.trainer.mix_ratio == 0 and cfg.trainer.steps == 60


def test_organism_weak_detector_knows_two_modes_and_holds_out_two():
    cfg = compose_train(["experiment=organism_weak", "arm=erase_real", "trainer.seed=41"])
    assert cfg.model.name == "organism" and not cfg.teacher.enabled and cfg.trainer.mix_ratio == 0
    known = [m.value for m in cfg.vhack.modes]
    assert known == ["run_tests", "sentinel"]
    assert [m for m in MIXED if m not in known] == ["stdout_marker", "file_marker"]


def test_smoke_keeps_an_explicit_cli_model_choice():
    # a GPU smoke of a hub model: command-line group choices beat smoke's defaults, its trainer values stay
    cfg = compose_train(["model=qwen3_0_6b", "smoke=quick"])
    assert cfg.model.name == "qwen3_0_6b" and cfg.trainer.steps == 2


def test_default_run_is_unchanged_by_the_new_groups():
    cfg = compose_train([], return_hydra_config=True)
    assert cfg.hydra.mode in (None, RunMode.RUN)
    assert cfg.projection.mode.value == "erase" and cfg.trainer.steps == 20


def test_arm_options_set_what_their_names_say():
    for path in sorted((Path(CONF_DIR) / "arm").glob("*.yaml")):
        cfg = compose_train([f"arm={path.stem}"])
        validate(cfg)
        assert arm_name(cfg) == path.stem


def arm_name(cfg) -> str:
    """vanilla | <projection>_<v_hack source> | route2_<mask> (route2 arms use the real pairs) | issue 21's arms:
    no_loophole, <monitor>_<intervention> (noisy<accuracy %>), inoculation, trusted."""
    iv = cfg.intervention
    if cfg.reward_mode.name == "none":
        return "no_loophole"
    if iv.kind.value != "none":
        mon = {"ground_truth": "gt", "noisy_ground_truth": "noisy", "probe": "probe"}[iv.monitor.name.value]
        return f"{mon}{round(100 * iv.monitor.accuracy) if mon == 'noisy' else ''}_{iv.kind.value}"
    if iv.inoculation is not None:
        return "inoculation"
    mode = cfg.projection.mode.value
    if mode == "trusted":
        return "trusted"
    if mode == "none":
        return "vanilla"
    if mode == "route2":
        assert cfg.vhack.source.value == "real"
        return f"route2_{cfg.projection.route2.mask.value}"
    return f"{mode}_{cfg.vhack.source.value}"


def test_heldout_options_cover_the_mixed_modes():
    options = sorted(p.stem for p in (Path(CONF_DIR) / "heldout").glob("*.yaml"))
    assert options == sorted(MIXED)


@pytest.mark.parametrize("path", sorted((Path(CONF_DIR) / "experiment").glob("*.yaml")), ids=lambda p: p.stem)
def test_experiment_config_is_tested(path):
    assert path.stem in EXPERIMENTS, (
        f"conf/experiment/{path.name} has no test: add an entry '{path.stem}': (sweep params, n jobs) "
        "to EXPERIMENTS in tests/test_experiments.py"
    )
