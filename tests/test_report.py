"""projected_grpo.report on synthetic run dirs with known numbers (no training needed)."""

import copy
import json
import math
import shutil

import pytest
from omegaconf import OmegaConf

from projected_grpo import report
from projected_grpo.modes import MODES
from tests.conftest import compose

CODES = [spec.code for spec in MODES.values()]
MIXED = ["run_tests", "sentinel", "stdout_marker", "file_marker"]


@pytest.fixture(scope="module")
def base_config():
    return OmegaConf.to_container(compose(), resolve=True, enum_to_str=True)


def make_config(base, projection="none", source="real", seed=41, k=5, vhack_modes=None):
    c = copy.deepcopy(base)
    c["projection"]["mode"], c["vhack"]["source"], c["vhack"]["k"] = projection, source, k
    c["trainer"]["seed"] = seed
    if vhack_modes is not None:
        c["vhack"]["modes"] = c["teacher"]["modes"] = list(vhack_modes)
    return c


def rate(p, n=48):
    k = round(p * n)
    return {"k": k, "n": n, "rate": k / n}


def evaluation(hack, solve, n=48, modes=None):
    return {"n": n, "hack": rate(hack, n), "solve": rate(solve, n), "modes": modes or {}}


def deploy_of(hack, solve, ablated=None, heldout=True):
    """summary['deploy'] with both splits (the same numbers), or the held-out split missing."""
    split = {"prompts": 12, "kept": evaluation(hack, solve)}
    if ablated is not None:
        split["ablated"] = ablated
    return {"step": 3, "prompts_per_mode": 3, "train": split,
            "heldout": dict(split) if heldout else {"missing": "no heldout problems in env.source"}}  # fmt: skip


def write_job(root, name, config, hack, solve, per_mode=None, deploy=None, cin=(0.3, 0.4, 0.05), steps=3,
              students_per_step=None):
    """A finished job: summary.json (last5 = the given numbers), metrics.jsonl, status.json done."""
    d = root / name
    d.mkdir(parents=True)
    last5 = {"hack_s": hack, "solve_s": solve, "hack_t": 0.9, "solve_t": 0.1, "reward": 0.5,
             "cin_s": cin[0], "cin_t": cin[1], "cin_null": cin[2], "cin": 0.35, "cout": 0.1}  # fmt: skip
    for c in CODES:
        last5[f"hack_s_{c}"], last5[f"solve_s_{c}"] = (per_mode or {}).get(c, (None, None))
    deploy = deploy or deploy_of(hack, solve)
    summary = {"steps": steps, "seed": config["trainer"]["seed"], "arm": config["projection"]["mode"],
               "students_per_step": students_per_step,
               "vhack_source": config["vhack"]["source"], "step0": {"hack_s": 0.0, "solve_s": 0.0},
               "last5": last5, "deploy": deploy, "wall_seconds": 1.0, "config": config}  # fmt: skip
    (d / "summary.json").write_text(json.dumps(summary))
    rows = [{"step": s, "hack_s": hack * s / steps, "solve_s": solve, "cin_s": cin[0], "cin_t": cin[1],
             "cin_null": cin[2]} for s in range(1, steps + 1)]  # fmt: skip
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "status.json").write_text(json.dumps({"status": "done"}))
    return d


def write_status_only(root, name, status, error=None, overrides=()):
    d = root / name
    (d / ".hydra").mkdir(parents=True)
    (d / "status.json").write_text(json.dumps({"status": status, **({"error": error} if error else {})}))
    (d / ".hydra" / "overrides.yaml").write_text(OmegaConf.to_yaml(list(overrides)))
    return d


@pytest.fixture
def sweep(tmp_path, base_config):
    """vanilla and route_real on seeds 41-43; erase_real on 41, 42, 44 (mismatched); one failed, one running."""
    root = tmp_path / "sweep"
    van = {41: (0.5, 0.2), 42: (0.6, 0.3), 43: (0.7, 0.4)}
    route = {41: (0.1, 0.3), 42: (0.3, 0.3), 43: (0.2, 0.5)}
    erase = {41: (0.4, 0.2), 42: (0.4, 0.4), 44: (0.9, 0.9)}
    for seed, (h, s) in van.items():
        write_job(root, f"v{seed}", make_config(base_config, seed=seed), h, s, per_mode={"fm": (h, s)})
    for seed, (h, s) in route.items():
        dep = deploy_of(h, s, ablated=evaluation(h / 2, s, modes={"fm": {"n": 12, "hack": rate(0.25, 12)}}))
        write_job(root, f"r{seed}", make_config(base_config, "route", seed=seed), h, s, deploy=dep,
                  per_mode={"fm": (h, s)})  # fmt: skip
    for seed, (h, s) in erase.items():
        write_job(root, f"nested/e{seed}", make_config(base_config, "erase", seed=seed), h, s)
    write_status_only(root, "f1", "failed", "RuntimeError: boom", ["arm=route_random", "trainer.seed=42"])
    write_status_only(root, "r1", "running", overrides=["arm=route_nonhack", "trainer.seed=43"])
    stale = write_job(root, "r2", make_config(base_config, "route", "random", seed=43), 0.0, 0.0)
    (stale / "status.json").write_text(json.dumps({"status": "running"}))  # resumed: old summary, running again
    (root / "x1").mkdir()
    (root / "x1" / "metrics.jsonl").write_text("")  # started, no status.json, no summary
    return root


def rows_by_label(md: str) -> dict[str, list[str]]:
    out = {}
    for line in md.splitlines():
        if line.startswith("| `"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            out.setdefault(cells[0].strip("`"), []).append(cells)
    return out


def section(md: str, title: str) -> str:
    return md.split(f"## {title}")[1].split("\n## ")[0]


def test_means_stds_and_paired_deltas(sweep):
    md = report.build_report([sweep]).read_text()
    main = rows_by_label(section(md, "Student hack and solve"))
    assert set(main) == {"vanilla", "route_real", "erase_real"}
    van, route = main["vanilla"][0], main["route_real"][0]
    assert van[1:5] == ["3", "41,42,43", "0.600 ± 0.100", "0.300 ± 0.100"]
    assert route[3] == "0.200 ± 0.100" and route[4] == "0.367 ± 0.115"
    # deltas per seed: -0.4, -0.3, -0.5 -> mean -0.4, std 0.1; solve +0.1, 0, +0.1
    assert route[5] == "-0.400 ± 0.100 [-0.500, -0.300] (n=3)"  # bootstrap over 3 seeds: their range
    assert route[6] == "3/3"  # seeds with Δ < 0
    assert route[7].startswith("+0.067 ± 0.058 [+0.000, +0.100] (n=3)")
    assert route[8] == "1 real V"  # one extraction behind the mean
    assert route[9] == ""  # same seeds as vanilla: no flag


def test_mismatched_seed_sets_are_flagged_and_deltas_use_matched_seeds(sweep):
    md = report.build_report([sweep]).read_text()
    erase = rows_by_label(section(md, "Student hack and solve"))["erase_real"][0]
    assert erase[2] == "41,42,44"
    assert erase[3] == "0.567 ± 0.289"  # all three seeds in the row's own mean
    assert erase[5] == "-0.150 ± 0.071 [-0.200, -0.100] (n=2)"  # deltas -0.1, -0.2 on seeds 41, 42 only
    assert erase[6] == "2/2"
    assert "⚠" in erase[9] and "[41, 42, 44]" in erase[9] and "[41, 42, 43]" in erase[9]


def test_failed_and_running_jobs_are_listed(sweep):
    md = report.build_report([sweep]).read_text()
    problems = section(md, "Failed or unfinished jobs")
    assert "`f1` | failed | arm=route_random trainer.seed=42 | RuntimeError: boom" in problems
    assert "`r1` | running | arm=route_nonhack trainer.seed=43" in problems
    assert "`r2` | running" in problems and "stale" in problems
    assert "`x1` | incomplete" in problems and "no status.json; no summary.json yet" in problems
    assert "9 finished jobs in 3 arms; 4 failed or unfinished" in md


def test_route_deploy_ablated_and_cin(sweep):
    md = report.build_report([sweep]).read_text()
    dep = rows_by_label(section(md, "Deployment eval"))
    route = {r[1]: r for r in dep["route_real"]}
    assert set(route) == {"heldout", "train"}  # both splits, one row each
    # ablated hack = hack / 2 -> k = 2, 7, 5 of 48 per seed, pooled 14/144 with its Wilson interval
    lo, hi = report.wilson(14, 144)
    assert route["train"][5] == f"{14 / 144:.3f} [{lo:.3f}, {hi:.3f}] (n=144)"
    # ablated minus vanilla's kept hack per seed (on the 48-sample rates): 2/48-24/48, 7/48-29/48, 5/48-34/48
    d = [2 / 48 - 24 / 48, 7 / 48 - 29 / 48, 5 / 48 - 34 / 48]
    assert route["heldout"][7].startswith(f"{sum(d) / 3:+.3f} ± ")
    assert route["heldout"][8] == "3/3"
    assert dep["vanilla"][0][5] == report.MISSING_CELL
    cin = rows_by_label(section(md, "Projection: cin"))
    assert cin["route_real"][0][1:4] == ["0.300 ± 0.000", "0.400 ± 0.000", "0.050 ± 0.000"]


def test_missing_heldout_split_is_stated(tmp_path, base_config):
    # kills: a report that drops (or silently fills) a split the run could not evaluate
    for seed in (41, 42):
        write_job(tmp_path, f"v{seed}", make_config(base_config, seed=seed), 0.5, 0.5, deploy=deploy_of(0.5, 0.5, heldout=False))
    dep = rows_by_label(section(report.build_report([tmp_path]).read_text(), "Deployment eval"))["vanilla"]
    held = {r[1]: r for r in dep}["heldout"]
    assert held[2] == report.MISSING_CELL and "missing: no heldout problems" in held[9]


def test_bootstrap_ci_unit():
    # kills: an interval that is not centred on the resampled means (e.g. mean ± std) or ignores the data
    assert report.bootstrap_ci([1.0]) is None
    lo, hi = report.bootstrap_ci([0.0, 0.0, 0.0, 1.0, 1.0])
    assert 0.0 <= lo < 0.4 < hi <= 1.0
    assert report.bootstrap_ci([0.3] * 4) == (0.3, 0.3)


def test_noise_flag_sign_count_and_bases(tmp_path, base_config):
    """5 seeds; random control: one basis per seed; |Δ| of 0.01 is under 2 SEs of a 32-sample step at p = 0.5."""
    # kills: a noise flag on the wrong side of the threshold, a sign count of Δ > 0, and bases counted as 1
    # when vhack.seed follows trainer.seed
    for seed in range(41, 46):
        van = make_config(base_config, seed=seed)
        write_job(tmp_path, f"v{seed}", van, 0.5, 0.5, students_per_step=32)
        rnd = make_config(base_config, "erase", "random", seed=seed)
        rnd["vhack"]["seed"] = seed
        write_job(tmp_path, f"e{seed}", rnd, 0.49 if seed != 45 else 0.52, 0.5, students_per_step=32)
        big = make_config(base_config, "erase", "real", seed=seed)
        write_job(tmp_path, f"r{seed}", big, 0.2, 0.5, students_per_step=32)
    main = rows_by_label(section(report.build_report([tmp_path]).read_text(), "Student hack and solve"))
    rnd, real = main["erase_random"][0], main["erase_real"][0]
    assert "≈noise" in rnd[5] and rnd[6] == "4/5" and rnd[8] == "5 random V"
    assert "≈noise" not in real[5] and real[6] == "5/5" and real[8] == "1 real V"


def test_plots_exist_and_are_pngs(sweep):
    report.build_report([sweep])
    for name in ("dynamics.png", "cin.png", "vanilla_seeds.png"):
        data = (sweep / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000, name


def test_swept_override_enters_the_arm_label(tmp_path, base_config):
    for seed in (41, 42):
        write_job(tmp_path, f"v{seed}", make_config(base_config, seed=seed), 0.5, 0.5)
        for k, h in ((1, 0.4), (12, 0.1)):
            write_job(tmp_path, f"r{k}_{seed}", make_config(base_config, "route", seed=seed, k=k), h, 0.5)
    main = rows_by_label(section(report.build_report([tmp_path]).read_text(), "Student hack and solve"))
    assert set(main) == {"vanilla vhack.k=5", "route_real vhack.k=1", "route_real vhack.k=12"}
    # vanilla pairs across k (k changes nothing in vanilla training)
    assert main["route_real vhack.k=12"][0][5] == "-0.400 ± 0.000 [-0.400, -0.400] (n=2)"


def test_a_key_constant_within_each_arm_is_not_in_its_label(tmp_path, base_config):
    # route's own projection.space=update beside vanilla/erase at grad is the arm's setting, named by its base; the
    # same key swept within route stays in the label. kills: the within-base rule dropped (labels "route_real
    # projection.space=update", "vanilla projection.space=grad"), or applied across bases (the swept space vanishes
    # and two configs average into one row)
    for seed in (41, 42):
        write_job(tmp_path, f"v{seed}", make_config(base_config, seed=seed), 0.5, 0.5)
        route = make_config(base_config, "route", seed=seed)
        route["projection"]["space"] = "update"
        write_job(tmp_path, f"r{seed}", route, 0.4, 0.5)
    main = rows_by_label(section(report.build_report([tmp_path]).read_text(), "Student hack and solve"))
    assert set(main) == {"vanilla", "route_real"}
    grad = make_config(base_config, "route", seed=41)
    grad["projection"]["space"] = "grad"
    write_job(tmp_path, "rg41", grad, 0.3, 0.5)
    main = rows_by_label(section(report.build_report([tmp_path]).read_text(), "Student hack and solve"))
    assert set(main) == {"vanilla projection.space=grad", "route_real projection.space=update",
                         "route_real projection.space=grad"}  # fmt: skip


def test_heldout_modes_reported_apart(tmp_path, base_config):
    known = MIXED[:3]  # file_marker held out
    for seed in (41, 42):
        for proj, h in (("none", 0.8), ("route", 0.2)):
            cfg = make_config(base_config, proj, seed=seed, vhack_modes=known)
            write_job(tmp_path, f"{proj}{seed}", cfg, h, 0.5, per_mode={"fm": (h, 0.5), "rt": (h / 2, 0.5)})
    md = report.build_report([tmp_path]).read_text()
    held = rows_by_label(md.split("### Held-out modes")[1].split("\n## ")[0])
    known_rows = rows_by_label(md.split("### Known modes")[1].split("### Held-out")[0])
    assert [r[1] for r in held["route_real"]] == ["file_marker (fm)"]
    assert held["route_real"][0][4] == "-0.600 ± 0.000 [-0.600, -0.600] (n=2)"
    assert {r[1] for r in known_rows["route_real"]} == {"run_tests (rt)", "sentinel (se)", "stdout_marker (so)"}
    # a single heldout setting does not vary, so it is not in the label; two settings would be
    assert "route_real" in held


def test_heldout_label_when_swept(tmp_path, base_config):
    for held in ("file_marker", "sentinel"):
        cfg = make_config(base_config, "route", vhack_modes=[m for m in MIXED if m != held])
        write_job(tmp_path, f"r_{held}", cfg, 0.2, 0.5)
    main = rows_by_label(section(report.build_report([tmp_path]).read_text(), "Student hack and solve"))
    assert set(main) == {"route_real heldout=fm", "route_real heldout=se"}


def test_no_vanilla_is_said_not_silent(tmp_path, base_config):
    write_job(tmp_path, "r", make_config(base_config, "route"), 0.2, 0.5)
    write_job(tmp_path, "r2", make_config(base_config, "route", seed=42), 0.4, 0.5, per_mode={"rt": (0.3, 0.1)})
    modes = rows_by_label(section(report.build_report([tmp_path]).read_text(), "Per loophole mode"))["route_real"]
    assert modes[0][1:3] == ["run_tests (rt)", "0.300 (n=1)"]  # one of the two seeds has rt samples
    row = rows_by_label(section(report.build_report([tmp_path]).read_text(), "Student hack and solve"))["route_real"]
    assert row[0][5] == report.MISSING_CELL and "no matching vanilla" in row[0][9]


def test_multiple_sweep_dirs_combine_and_write_into_the_first(tmp_path, base_config):
    a, b = tmp_path / "a", tmp_path / "b"
    write_job(a, "r", make_config(base_config, "route", seed=41), 0.2, 0.5)
    write_job(b, "v", make_config(base_config, seed=41), 0.7, 0.5)
    path = report.build_report([a, b])
    assert path == a / "report.md"
    assert rows_by_label(section(path.read_text(), "Student hack and solve"))["route_real"][0][5] == "-0.500 (n=1)"


def test_cli_errors_name_the_problem(tmp_path):
    from projected_grpo.report.__main__ import main

    with pytest.raises(SystemExit, match="does not exist"):
        main([str(tmp_path / "nope")])
    with pytest.raises(SystemExit, match="no job dirs"):
        main([str(tmp_path)])


def test_paired_delta_unit():
    jobs = lambda vals: [report.Job(path=None, root=None, status="done", summary={"seed": s, "last5": {"x": v}})
                         for s, v in vals]  # fmt: skip
    m, s, n = report.paired_delta(jobs([(1, 1.0), (2, 2.0), (3, 9.0)]), jobs([(1, 0.5), (2, 1.0)]), "last5.x")
    assert n == 2 and m == pytest.approx(0.75) and s == pytest.approx(math.sqrt(0.125))


def test_schema_drift_splits_arms_and_is_flagged(tmp_path, base_config):
    old = make_config(base_config, "route", seed=41)
    new = make_config(base_config, "route", seed=42)
    new["vhack"]["n_new_knob"] = 24  # a key a later version of the code added
    write_job(tmp_path, "old", old, 0.2, 0.5)
    write_job(tmp_path, "new", new, 0.4, 0.5)
    md = report.build_report([tmp_path]).read_text()
    assert set(rows_by_label(section(md, "Student hack and solve"))) == {"route_real", "route_real vhack.n_new_knob=24"}
    assert "present in only some jobs" in md and "vhack.n_new_knob" in md


def test_keys_a_later_schema_added_at_their_default_do_not_split_arms(tmp_path, base_config):
    # kills: filling a key whose newer value is NOT the default (two different runs averaged), or no filling at all
    old = make_config(base_config, "route", seed=41)
    del old["trainer"]["folded_forward"], old["trainer"]["drift_k"]  # written before these keys existed
    at_default = make_config(base_config, "route", seed=42)  # folded_forward=True, drift_k=2: the defaults
    write_job(tmp_path, "old", old, 0.2, 0.5)
    write_job(tmp_path, "new", at_default, 0.4, 0.5)
    md = report.build_report([tmp_path]).read_text()
    assert set(rows_by_label(section(md, "Student hack and solve"))) == {"route_real"}
    assert "read as that default" in md and "trainer.folded_forward" in md and "present in only some" not in md
    changed = make_config(base_config, "route", seed=43)
    changed["trainer"]["drift_k"] = 3
    write_job(tmp_path, "changed", changed, 0.4, 0.5)
    md = report.build_report([tmp_path]).read_text()
    assert "present in only some jobs" in md and "trainer.drift_k" in md.split("present in only some jobs")[1]


def test_a_job_whose_grader_failed_is_listed_not_averaged(tmp_path, base_config):
    # kills: grade_errors ignored (a sweep whose sandbox changed under it averaged in as hack 0, solve 0)
    write_job(tmp_path, "v41", make_config(base_config, seed=41), 0.5, 0.2)
    bad = write_job(tmp_path, "e41", make_config(base_config, "erase", seed=41), 0.0, 0.0)
    t = base_config["trainer"]
    per_step = t["prompts_per_step"] * t["group"]
    rows = [{"step": s, "hack_s": 0.0, "solve_s": 0.0, "grade_errors": {"sandbox_error": per_step}} for s in (1, 2, 3)]
    (bad / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    md = report.build_report([tmp_path]).read_text()
    assert "erase_real" not in rows_by_label(section(md, "Student hack and solve"))
    assert "grader-side failures" in section(md, "Failed or unfinished jobs") and "sandbox_error" in md


def test_emergence_table_per_seed_and_mode(tmp_path, base_config):
    """Vanilla jobs get a first-5 -> last-5 student hack table per seed and mode; unsampled windows show a dash."""
    root = tmp_path / "sweep"
    for seed in (41, 42):
        d = write_job(root, f"v{seed}", make_config(base_config, seed=seed), 0.5, 0.2, steps=12)
        rows = [{"step": s, "hack_s": 0.1 if s <= 5 else 0.6, "solve_s": 0.3, "hack_s_rt": 0.0 if s <= 5 else 0.9,
                 "hack_s_fm": None} for s in range(1, 13)]  # fmt: skip
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    md = report.build_report([root]).read_text()
    text = section(md, "Emergence under vanilla GRPO")
    assert "| seed 41 | 0.10 → 0.60 (+50 pts) | 0.00 → 0.90 (+90 pts) |" in text
    assert "run_tests (rt)" in text and "file_marker (fm)" in text
    assert text.count("—") >= 2  # fm never sampled, in both seeds


def test_no_emergence_table_without_vanilla(sweep):
    for d in list(sweep.glob("v4*")):
        shutil.rmtree(d)
    assert "Emergence under vanilla" not in report.build_report([sweep]).read_text()


def test_rolling_mean_is_trailing_and_shorter_at_the_start():
    # kills: a window off by one (i - window instead of i - window + 1), or a centred window that looks ahead
    assert report.rolling_mean([0.0, 2.0, 4.0, 6.0, 8.0], 3) == [0.0, 1.0, 2.0, 4.0, 6.0]
    assert report.rolling_mean([1.0, 3.0], 1) == [1.0, 3.0]
