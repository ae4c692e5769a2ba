"""Resuming through the CLI (issue 16, findings 1 and 2): a crafted pickle checkpoint runs nothing, and a refused
resume (truncated checkpoint, random bytes, another config) changes nothing in the run dir: not .hydra/*, not
status.json (a `done` run stays `done`), not train.log. Written so that it also runs against the old code."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from tests.test_loop import train


class Payload:
    """Unpickling this writes a marker file: what a crafted checkpoint.pt could do instead."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def snapshot(d) -> dict:
    """Every file under d: bytes and mtime."""
    return {str(p.relative_to(d)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_crafted_pickle_checkpoint_runs_nothing(tmp_path):
    # finding 1 (old code: torch.load(weights_only=False) ran the payload, then KeyError: 'config')
    # kills: checkpoint.preflight unpickling checkpoint.pt (or any torch.load(weights_only=False) on resume)
    run, marker = tmp_path / "run", tmp_path / "marker"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(pickle.dumps({"config": Payload(marker), "step": 1}))
    r = train(run, "trainer.steps=1", "trainer.resume=true", check=False)
    assert not marker.exists(), "unpickling the checkpoint ran its payload"
    assert r.returncode != 0
    assert "old pickle format" in r.stderr and "python -m projected_grpo.checkpoint convert" in r.stderr, r.stderr[
        -2000:
    ]
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.pt"]  # the refused run wrote nothing


@pytest.mark.slow
def test_refused_resume_changes_nothing_in_the_run_dir(tmp_path):
    # finding 2 (old code: .hydra/*.yaml rewritten with the refused overrides, status done -> failed, train.log
    # appended). kills: run() writing status/.hydra before checkpoint.preflight, Hydra's output_subdir or
    # file handler back on, or a CheckpointError turned into status=failed
    run = tmp_path / "run"
    train(run, "trainer.steps=1")
    (ckpt,) = run.glob("checkpoint.*")
    good = ckpt.read_bytes()
    noise = torch.randint(0, 256, (len(good),), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    cases = [
        ("another config", good, ["trainer.seed=7"], "different config"),
        ("truncated", good[: len(good) // 2], [], "not a readable safetensors file"),
        ("random bytes", noise.numpy().tobytes(), [], "not a readable safetensors file"),
    ]
    for what, content, extra, why in cases:
        ckpt.write_bytes(content)
        before = snapshot(run)
        r = train(run, "trainer.steps=1", *extra, check=False)
        assert r.returncode != 0, what
        assert str(ckpt) in r.stderr and why in r.stderr and "fresh run directory" in r.stderr, (what, r.stderr[-2000:])
        assert snapshot(run) == before, f"{what}: the refused run changed the run dir"
        assert json.loads((run / "status.json").read_text())["status"] == "done"
        assert "seed: 7" not in (run / ".hydra" / "config.yaml").read_text()
