"""Run/sweep directory naming (conf/train.yaml `hydra:`) and status.json, through real `train.py -m` runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

TRAIN = str(REPO / "train.py")


def train(tmp: Path, *overrides: str, timeout: float = 600) -> subprocess.Popen:
    """`python train.py ...` with cwd=tmp, so multirun/ and outputs/ land in tmp (the default naming)."""
    return subprocess.Popen(
        [sys.executable, TRAIN, *overrides], cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finish(p: subprocess.Popen, timeout: float = 600) -> tuple[int, str]:
    try:
        out, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
        pytest.fail(f"train.py timed out after {timeout}s:\n{out[-4000:]}")
    return p.returncode, out


def status(job_dir: Path) -> dict:
    return json.loads((job_dir / "status.json").read_text())


@pytest.mark.slow
def test_two_sweeps_in_the_same_second_get_distinct_dirs(tmp_path):
    args = ["-m", "trainer.steps=0", "trainer.seed=1,2"]
    procs = [train(tmp_path, *args), train(tmp_path, *args)]  # started together: same second
    results = [finish(p) for p in procs]
    for rc, out in results:
        assert rc == 0, out[-4000:]
    (day,) = (tmp_path / "multirun").iterdir()
    sweeps = sorted(day.iterdir())
    assert len(sweeps) == 2, sweeps  # would be 1 (both writing the same dir) with a seconds-only name
    for sweep in sweeps:
        assert sweep.name.endswith("_sweep"), sweep.name  # <time>-p<pid>_<experiment or 'sweep'>
        jobs = sorted(d.name for d in sweep.iterdir() if d.is_dir() and not d.name.startswith("."))
        assert jobs == ["0_trainer.seed=1,trainer.steps=0", "1_trainer.seed=2,trainer.steps=0"]
        for job in jobs:
            assert status(sweep / job)["status"] == "done"


def test_failed_job_writes_status_with_the_error(tmp_path):
    rc, out = finish(train(tmp_path, "-m", "env.source=/nonexistent.jsonl", "trainer.seed=3"), timeout=300)
    assert rc != 0, out[-4000:]
    (sweep,) = (tmp_path / "multirun").glob("*/*_sweep")
    job = sweep / "0_env.source=_nonexistent.jsonl,trainer.seed=3"  # '/' in values becomes '_'
    st = status(job)
    assert st["status"] == "failed", st
    assert "/nonexistent.jsonl" in st["error"], st


def test_experiment_name_in_sweep_dir(tmp_path):
    """The sweep dir carries the experiment name (resolved without running: --cfg hydra)."""
    p = subprocess.run(
        [sys.executable, TRAIN, "experiment=arms", "--cfg", "hydra", "-p", "hydra.sweep.dir", "--resolve"],
        cwd=tmp_path, check=False, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr[-4000:]
    assert p.stdout.strip().endswith("_arms"), p.stdout
