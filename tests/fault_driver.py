"""Runs train.py's Hydra main in this process with one fault armed: SIGKILL at a chosen point (tests/test_faults.py).

    python tests/fault_driver.py POINT N [hydra overrides...]

POINT (N counts from 1, in this process):
  vhack       the N-th atomic write of a v_hack file: its temp file half written, then SIGKILL (mid-extraction)
  pool        the N-th atomic write of a teacher pool file: half written, then SIGKILL (mid-build)
  ckpt_write  the N-th atomic write of checkpoint.safetensors: half written, then SIGKILL
  step        the N-th optimizer step: after rollouts and backward, before AdamW steps, SIGKILL (mid-step)

The code under test is not changed: the driver wraps functions from outside (atomic_path where integrity.py and
atomic.py look it up, Trainer.optimizer_step).
"""

from __future__ import annotations

import os
import signal
import sys
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

POINTS = {"vhack": "vhack", "pool": "teacher_pool-", "ckpt_write": "checkpoint.safetensors", "step": None}


def die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def arm(point: str, n: int) -> None:
    from projected_grpo import atomic, integrity, loop

    calls = {"n": 0}

    def hit() -> bool:
        calls["n"] += 1
        return calls["n"] == n

    if point == "step":
        original = loop.Trainer.optimizer_step

        def optimizer_step(self, *args):
            if hit():
                die()
            return original(self, *args)

        loop.Trainer.optimizer_step = optimizer_step
        return
    needle, real = POINTS[point], atomic.atomic_path

    @contextmanager
    def atomic_path(path):
        with real(path) as tmp:
            yield tmp
            if needle in str(path) and hit():  # the body wrote the whole temp file: keep half, die before the rename
                data = tmp.read_bytes()
                tmp.write_bytes(data[: len(data) // 2])
                die()

    atomic.atomic_path = atomic_path
    integrity.atomic_path = atomic_path


def main() -> None:
    point, n, overrides = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    if point not in POINTS:
        sys.exit(f"unknown fault point {point!r}; one of {sorted(POINTS)}")
    arm(point, n)
    from projected_grpo.train import main as train_main

    sys.argv = [str(REPO / "train.py"), "hydra.job.name=train", *overrides]
    train_main()


if __name__ == "__main__":
    main()
