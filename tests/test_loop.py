"""The train loop: per-source gradients, zero-variance groups, the no-cheat rule, determinism, resume, CLI arms."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from projected_grpo.adapter import adapter_modules
from projected_grpo.loop import Trainer
from projected_grpo.rollout import Rollout
from projected_grpo.setup import build_setup
from projected_grpo.tracking import PER_MODE, STEP_METRICS
from tests.conftest import REPO, compose

# Small enough for 2 CPU cores; the shared session cache means v_hack is extracted once.
FAST = [
    "trainer.max_new_tokens=12",
    "trainer.group=4",
    "trainer.prompts_per_step=2",
    "trainer.eval_prompts_per_mode=1",
    "trainer.eval_every=0",
    "vhack.n_pairs=12",
]


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    cfg = compose(FAST + ["trainer.steps=2", "projection=none"])
    s = build_setup(cfg, tmp_path_factory.mktemp("run"))
    t = Trainer(cfg, s)
    yield t
    t.close()


def fixed_rollouts(t: Trainer, rewards, exploited=None, gt=None):
    """Two groups of known completions (2 student-marked + 2 teacher-marked each)."""
    from projected_grpo.env import completions
    from projected_grpo.tokens import encode_completion

    out = []
    for i, p in enumerate(t.train_problems[:2]):
        texts = [completions.honest(p), completions.wrong(p), completions.hack(p, p.mode), completions.honest(p, 1)]
        ids = [encode_completion(t.tok, x, t.t.max_new_tokens) for x in texts]
        n = len(texts)
        out.append(Rollout(p, t.prompt_ids(p), ids, texts, [False, False, True, True], list(rewards[i]),
                           list(exploited[i]) if exploited else [False] * n,
                           list(gt[i]) if gt else [False] * n))  # fmt: skip
    return out


def knob_grads(t: Trainer):
    return {n: m.delta_s.grad.clone() for n, m in adapter_modules(t.model).items()}


def test_per_source_gradients_sum_to_full_gradient(trainer):
    b = trainer.backward(fixed_rollouts(trainer, [[1.25, 0.25, 1.25, 0.0], [0.25, 1.25, 0.0, 0.25]]))
    full = knob_grads(trainer)
    assert any(g.abs().sum() > 0 for g in full.values())
    for n, g in full.items():
        assert torch.allclose(b["g_s"][n] + b["g_t"][n], g, atol=1e-7, rtol=1e-5), n
        assert b["g_s"][n].abs().sum() > 0 and b["g_t"][n].abs().sum() > 0


def test_zero_variance_groups_give_zero_gradient(trainer):
    b = trainer.backward(fixed_rollouts(trainer, [[0.25] * 4, [1.25] * 4]))
    assert b["frac_zero_var"] == 1.0
    assert all(not g.any() for g in knob_grads(trainer).values())


def test_oracle_verdicts_do_not_change_gradients(trainer):
    rewards = [[1.25, 0.25, 1.25, 0.0], [0.25, 1.25, 0.0, 0.25]]
    trainer.backward(fixed_rollouts(trainer, rewards, exploited=[[0] * 4] * 2, gt=[[0] * 4] * 2))
    g1 = knob_grads(trainer)
    flipped = [[True, False, True, False], [False, True, True, True]]
    trainer.backward(fixed_rollouts(trainer, rewards, exploited=flipped, gt=[[not x for x in r] for r in flipped]))
    g2 = knob_grads(trainer)
    assert all(torch.equal(g1[n], g2[n]) for n in g1)


def test_grade_errors_reach_the_metrics_row(trainer):
    """Issue 13 item 5: the row carries the grader-side failures since the previous row, per reason
    (kills: metrics_row not reading them, or reading them without taking them)."""
    rollouts = fixed_rollouts(trainer, [[1.25, 0.25, 1.25, 0.0], [0.25, 1.25, 0.0, 0.25]])
    b = {**trainer.backward(rollouts), "cin_s": 0.0, "cin_t": None}  # train_step adds the cin means over updates
    trainer.grader.take_grade_errors()
    for _ in range(2):
        trainer.grader._grade_error("worker_died", "injected by the test")
    assert trainer.metrics_row(rollouts, b, {}, 1e-3, {})["grade_errors"] == {"worker_died": 2}
    assert trainer.metrics_row(rollouts, b, {}, 1e-3, {})["grade_errors"] == {}


# ---------------------------------------------------------------------------------------------------
# Through the CLI


def train(run_dir, *overrides, timeout=600, check=True):
    r = subprocess.run(
        [sys.executable, "train.py", f"hydra.run.dir={run_dir}", *FAST, *overrides],
        check=False, cwd=REPO, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    if check:
        assert r.returncode == 0, r.stderr[-3000:]
    return r


def rows(run_dir):
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def comparable(rs):
    return [{k: v for k, v in r.items() if not k.startswith("sec_")} for r in rs]


ARMS = [
    [],
    ["projection=none"],
    ["projection=route"],
    ["projection.space=update"],
    ["vhack.source=random"],
    ["vhack.refresh_every=1"],
    ["trainer.beta=0.01"],
    ["trainer.updates_per_batch=2", "trainer.beta=0.01"],
    ["projection=route", "projection.space=grad"],  # the original method's variant stays selectable
]


@pytest.mark.slow
@pytest.mark.parametrize("arm", ARMS, ids=lambda a: "+".join(a) or "default")
def test_cli_arms_write_metrics_and_summary(tmp_path, arm):
    train(tmp_path, "trainer.steps=3", *arm)
    rs = rows(tmp_path)
    assert [r["step"] for r in rs] == [1, 2, 3]
    for r in rs:
        assert set(r) == set(STEP_METRICS + PER_MODE)
        assert r["cin"] is not None and r["cin_null"] > 0 and r["hack_t"] is not None
    s = json.loads((tmp_path / "summary.json").read_text())
    assert s["steps"] == 3 and "hack_s" in s["last5"]
    for split in ("heldout", "train"):  # balanced: the same number of prompts per mode, n and Wilson CIs
        ev = s["deploy"][split]["kept"]
        assert {m["n"] for m in ev["modes"].values()} == {4} and len(ev["modes"]) == 4  # 1 prompt x 4 samples
        assert ev["hack"]["n"] == 16 and len(ev["hack"]["ci95"]) == 2
    assert json.loads((tmp_path / "status.json").read_text())["status"] == "done"
    if arm and arm[0] == "projection=route":
        assert all("ablated" in s["deploy"][split] for split in ("heldout", "train"))
    if arm == ["vhack.refresh_every=1"]:
        assert all(r["basis_overlap"] is not None for r in rs)
    if arm == []:  # erase, one-sided, grad space: nothing hack-ward survives in the gradient
        assert all(r["cout"] < 1e-6 for r in rs)


@pytest.mark.slow
def test_same_seed_same_metrics_and_kill_resume(tmp_path):
    steps = ["trainer.steps=4", "trainer.ckpt_every=1"]
    a = tmp_path / "a"
    train(a, *steps)
    b = tmp_path / "b"
    train(b, *steps)
    assert comparable(rows(a)) == comparable(rows(b))  # determinism: same seed, same machine

    c = tmp_path / "c"
    cmd = [sys.executable, "train.py", f"hydra.run.dir={c}", *FAST, *steps]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if (c / "metrics.jsonl").exists() and len(rows(c)) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "run finished before it could be killed; make the test run longer"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(rows(c)) < 4
    r = train(c, *steps)
    assert "resumed from" in r.stdout
    assert comparable(rows(c)) == comparable(rows(a))


@pytest.mark.slow
def test_resume_refuses_a_checkpoint_from_another_config(tmp_path):
    train(tmp_path, "trainer.steps=1")
    r = train(tmp_path, "trainer.steps=1", "trainer.lr=0.5", check=False)
    assert r.returncode != 0 and "different config" in r.stderr
    r = train(tmp_path / "fresh", "trainer.steps=1", "trainer.resume=true", check=False)
    assert r.returncode != 0 and "no checkpoint.safetensors" in r.stderr


# ---------------------------------------------------------------------------------------------------
# The no-cheat rule across whole train steps: the oracle's verdicts never reach anything that trains

# ~1-5 min each on a loaded 2-core box (cold cache: the teacher pool is built once per test session)
NO_CHEAT = {
    # every arm of experiment=interventions that is not oracle-informed (tests/test_interventions.py checks the list)
    "vanilla": ["arm=vanilla"],
    "erase_real": ["arm=erase_real"],
    "route_real": ["arm=route_real"],
    "probe_screening": ["arm=probe_screening"],  # a probe that read r.exploited would fail here
    "probe_penalty": ["arm=probe_penalty"],
    "inoculation": ["arm=inoculation"],
    "trusted": ["arm=trusted"],
    "route_refresh_mu2": ["projection=route", "vhack.refresh_every=1", "trainer.updates_per_batch=2"],
    "route2_grad_refresh": ["projection=route2", "vhack.refresh_every=1"],
    "route2_act_beta": ["projection=route2", "projection.route2.mask=act", "trainer.beta=0.01"],
}


def randomised_oracle(t: Trainer, seed: int) -> None:
    """Replace every oracle verdict (exploited, gt_correct) the trainer sees, student and teacher, by coin flips;
    the rewards (what training may read) are untouched."""
    import dataclasses
    import random

    rng = random.Random(seed)
    flip = lambda x: dataclasses.replace(x, exploited=rng.random() < 0.5, gt_correct=rng.random() < 0.5)
    grade, pool_sample = t.grader.grade_batch, t.pool.sample
    t.grader.grade_batch = lambda items: [flip(g) for g in grade(items)]
    t.pool.sample = lambda *a, **k: [flip(s) for s in pool_sample(*a, **k)]


def trained_state(t: Trainer) -> dict[str, torch.Tensor]:
    out = {}
    for n, m in adapter_modules(t.model).items():
        out[f"{n}.delta_s"], out[f"{n}.delta_s_hack"] = m.delta_s.detach().clone(), m.delta_s_hack.detach().clone()
    if t.route2 is not None:
        out.update({f"q{i}": p.detach().clone() for i, p in enumerate(t.route2.parameters())})
        out.update({f"mask.{n}": v.detach().clone() for n, v in t.route2.v.items()})
    out.update({f"v.{n}": v.detach().clone() for n, v in t.v.items()})
    return out


# Arms that cannot train on the tiny model (the test's vacuity guard would fail): strict xfail with the reason.
# probe_screening was one while the probe's threshold was fixed at 0.5 (it screened every sample with a nonzero
# advantage); since the probe is calibrated to flag probe_flag_rate of the base policy's samples it trains (issue 21).
NO_CHEAT_VACUOUS: dict[str, str] = {}


@pytest.mark.slow
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=NO_CHEAT_VACUOUS[n]))
                                  if n in NO_CHEAT_VACUOUS else n for n in sorted(NO_CHEAT)])  # fmt: skip
def test_oracle_verdicts_never_reach_the_knobs_or_the_quarantine(tmp_path, name):
    # kills: any loss, advantage, projection, mask or refresh that reads Rollout.exploited / gt_correct or the
    # teacher pool's verdicts (e.g. A - 0.1 * exploited in backward, or route2 flagging by r.exploited)
    cfg = compose(FAST + ["trainer.steps=2", *NO_CHEAT[name]])
    assert cfg.teacher.enabled and cfg.trainer.mix_ratio > 0  # the teacher pool is in every step
    states = []
    for seed in (None, 1):
        t = Trainer(cfg, build_setup(cfg, tmp_path / f"run{seed}"))
        try:
            if seed is not None:
                randomised_oracle(t, seed)
            rows = [t.train_step(), t.train_step()]
            states.append(trained_state(t))
        finally:
            t.close()
    assert any(r["frac_zero_var"] < 1 for r in rows)  # something was trained
    a, b = states
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
    assert any(a[k].any() for k in a if k.endswith(".delta_s"))


def test_later_updates_of_a_batch_use_the_sampling_policys_logprobs(trainer):
    # kills: the old call token_loss_sum(logp, logp.detach(), ...) at every update (ratio always 1, clip inert),
    # and old log-probs re-taken after the knobs moved
    rs = fixed_rollouts(trainer, [[1.25, 0.25, 1.25, 0.0], [0.25, 1.25, 0.0, 0.25]])
    b1 = trainer.backward(rs)
    mods = adapter_modules(trainer.model)
    try:
        with torch.no_grad():
            for i, m in enumerate(mods.values()):  # the "first update": move the knobs
                m.delta_s.copy_(0.5 * torch.randn(m.r, generator=torch.Generator().manual_seed(i)))
        b2 = trainer.backward(rs, b1["old_logps"])
        g_old = knob_grads(trainer)
        assert all(a is b for a, b in zip(b2["old_logps"], b1["old_logps"]))
        trainer.backward(rs)  # ratio 1 again: what a wrong second update would compute
        g_fresh = knob_grads(trainer)
        assert any(not torch.allclose(g_old[n], g_fresh[n]) for n in g_old)
    finally:
        with torch.no_grad():
            for m in mods.values():
                m.delta_s.zero_()


def test_cin_t_is_null_without_teacher_samples(trainer):
    # kills: cin_t reported as 0.000 (cin of an all-zero teacher gradient) when no teacher sample is in the loss
    rs = fixed_rollouts(trainer, [[1.25, 0.25, 1.25, 0.0], [0.25, 1.25, 0.0, 0.25]])
    for r in rs:
        r.is_teacher = [False] * len(r.is_teacher)
    assert trainer.backward(rs)["teacher_in_loss"] is False
    rs_t = fixed_rollouts(trainer, [[1.25, 0.25, 1.25, 0.0], [0.25, 1.25, 0.0, 0.25]])
    assert trainer.backward(rs_t)["teacher_in_loss"] is True
    row = trainer.metrics_row(rs, {"loss": 0.0, "kl": 0.0, "frac_zero_var": 0.0, "cin_s": 0.1,
                                   "cin_t": trainer_cin_t(trainer, rs)}, {}, 0.0, {})  # fmt: skip
    assert row["cin_t"] is None and row["hack_t"] is None


def trainer_cin_t(t: Trainer, rollouts):
    """cin_t exactly as Trainer.train_step derives it from one backward."""
    from projected_grpo.loss import cin_of_teacher

    return cin_of_teacher(t.v, t.backward(rollouts))


def test_grading_overlaps_the_backward_of_earlier_groups(trainer):
    # Trainer.rollouts grades each group in the background; a group's grades are waited for only when its backward
    # needs them (Rollout.ready), so group 1 is still being graded while group 0's backward could run. Same grades
    # as the blocking path. kills: all groups graded in one blocking call; ready() of group 0 waiting for every
    # group; student grades written to the teacher slots; rewards readable (not NaN) before ready()
    import threading
    from types import SimpleNamespace

    release = threading.Event()
    calls = []

    def grade_batch(items):
        calls.append(len(items))
        if len(calls) == 2 and not release.wait(30):  # the second group's grading blocks until released
            raise TimeoutError("never released")
        return [SimpleNamespace(reward=0.25 * (k + len(calls)), exploited=bool(k % 2), gt_correct=k == 0)
                for k in range(len(items))]  # fmt: skip

    real, trainer.grader.grade_batch = trainer.grader.grade_batch, grade_batch
    state = (trainer.rng.getstate(), trainer.gen.get_state())
    try:
        timing = {}
        rs = trainer.rollouts(timing)
        n_s = trainer.n_student
        assert all(math.isnan(x) for x in rs[1].rewards[:n_s])  # NaN placeholders until ready()
        rs[0].ready()
        assert rs[0].rewards[:n_s] == [0.25 * (k + 1) for k in range(n_s)] and rs[1].pending is not None
        assert not rs[1].pending.done()  # group 1 still grading while group 0 is usable
        release.set()
        rs[1].ready()
        assert rs[1].rewards[:n_s] == [0.25 * (k + 2) for k in range(n_s)]
        assert rs[1].exploited[:n_s] == [bool(k % 2) for k in range(n_s)]
        assert all(r.is_teacher[n_s:] == [True] * (len(r.is_teacher) - n_s) for r in rs)
        # the blocking path (collect(overlap=False)) draws the same prompts and samples
        trainer.rng.setstate(state[0]), trainer.gen.set_state(state[1])
        calls.clear(), release.set()
        from projected_grpo import rollout

        blocking = rollout.collect(trainer.model, trainer.tok, trainer.t, trainer.train_problems, n_s,
                                   trainer.n_teacher, trainer.pool, trainer.grader, trainer.rng, trainer.gen, {})  # fmt: skip
        assert calls == [len(rs) * n_s] and [b.completion_ids for b in blocking] == [r.completion_ids for r in rs]
        assert [b.rewards[n_s:] for b in blocking] == [r.rewards[n_s:] for r in rs]  # teacher samples: same draws
    finally:
        trainer.grader.grade_batch = real
