"""The train loop: per-source gradients, zero-variance groups, the no-cheat rule, determinism, resume, CLI arms."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from projected_grpo.adapter import adapter_modules
from projected_grpo.loop import Rollout, Trainer, build_setup
from projected_grpo.tracking import PER_MODE, STEP_METRICS
from tests.conftest import REPO, compose

# Small enough for 2 CPU cores; the shared session cache means v_hack is extracted once.
FAST = [
    "trainer.max_new_tokens=12",
    "trainer.group=4",
    "trainer.prompts_per_step=2",
    "trainer.n_eval_prompts=2",
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
    assert s["steps"] == 3 and "hack_s" in s["last5"] and "kept" in s["deploy"]
    assert json.loads((tmp_path / "status.json").read_text())["status"] == "done"
    if arm == ["projection=route"]:
        assert "ablated" in s["deploy"]
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
