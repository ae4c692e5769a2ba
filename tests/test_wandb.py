"""logger=wandb in a 2-job local sweep: one offline W&B run per job, with the job's config and summary."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

TINY = [
    "smoke=quick",
    "trainer.group=2",
    "trainer.mix_ratio=0",
    "teacher.enabled=false",
    "trainer.max_new_tokens=8",
    "trainer.eval_prompts_per_mode=1",
]


def wandb_records(path: Path):
    """The protobuf records of an offline run's .wandb file (W&B's LevelDB-style log: a 7-byte file header,
    32 KiB blocks, 7-byte record headers <crc u32, length u16, type u8>; FULL=1, FIRST=2, MIDDLE=3, LAST=4)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, block = path.read_bytes(), 32768
    ident, _, _ = struct.unpack("<4sHB", data[:7])
    assert ident == b":W&B", f"{path} is not a W&B log ({ident!r})"
    pos, buf = 7, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if left < 7 or (kind == 0 and length == 0):
            pos += left  # block trailer / padding
            continue
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        buf = chunk if kind in (1, 2) else buf + chunk
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(buf)
            yield rec


def run_config_and_summary(path: Path) -> tuple[dict, dict]:
    config, summary = {}, {}
    for rec in wandb_records(path):
        kind = rec.WhichOneof("record_type")
        items = rec.run.config.update if kind == "run" else rec.config.update if kind == "config" else []
        for it in items:
            config[it.key] = json.loads(it.value_json)
        if kind == "summary":
            for it in rec.summary.update:
                summary[it.key or "/".join(it.nested_key)] = json.loads(it.value_json)
    return config, summary


@pytest.mark.slow
def test_two_job_sweep_makes_two_offline_runs(tmp_path):
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path / "wandb_dir"), "WANDB_SILENT": "true"}
    cmd = [
        sys.executable,
        str(REPO / "train.py"),
        "-m",
        *TINY,
        "logger=wandb",
        "trainer.seed=1,2",
        f"hydra.sweep.dir={tmp_path}/sweep",
    ]
    p = subprocess.run(cmd, cwd=tmp_path, env=env, check=False, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
    jobs = sorted((tmp_path / "sweep").glob("[0-9]_*"))
    assert len(jobs) == 2  # job subdirs carry every override; the swept seed comes last (sorted keys)
    assert jobs[0].name.startswith("0_") and jobs[0].name.endswith("trainer.seed=1")
    assert jobs[1].name.startswith("1_") and jobs[1].name.endswith("trainer.seed=2")
    ids = set()
    for seed, job in zip((1, 2), jobs):
        # start_wandb passes dir=<run dir>, so each job's offline run lies in its own dir
        (run,) = job.glob("wandb/offline-run-*")
        ids.add(run.name.rsplit("-", 1)[1])
        (log,) = run.glob("run-*.wandb")
        cfg, summary = run_config_and_summary(log)
        assert cfg["trainer"]["seed"] == seed, cfg.get("trainer")  # the resolved Hydra config
        assert cfg["logger"]["name"] == "wandb" and cfg["projection"]["mode"] == "erase"
        local = json.loads((job / "summary.json").read_text())
        assert summary["last5/hack_s"] == local["last5"]["hack_s"] and summary["steps"] == local["steps"] == 2
        assert "hack_s" in summary and not any(k.startswith("config/") for k in summary)
    assert len(ids) == 2  # one run id per job dir
