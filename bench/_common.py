"""Shared helpers for the bench scripts (not a benchmark itself: `make bench` skips names starting with _)."""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_DISABLED", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def compose(overrides=()):
    """The composed train config (Hydra compose API), as the entrypoint would see it."""
    from projected_grpo.config import compose_train

    return compose_train(overrides)


def median(xs) -> float:
    return float(statistics.median(xs))


def const_rewards(n: int) -> list[float]:
    """Constant-time rewards with variance inside every group (alternating 0/1), so no group is skipped."""
    return [float(i % 2) for i in range(n)]


def stub_grader(trainer) -> None:
    """Replace the trainer's grader by a constant-time one (grading cost excluded from every figure)."""

    def grade_batch(items):
        return [SimpleNamespace(reward=r, exploited=False, gt_correct=bool(r)) for r in const_rewards(len(items))]

    trainer.grader.grade_batch = grade_batch


def force_full_length() -> None:
    """Trainer.generate -> sample(..., eos_id=-1): no row can stop early, every completion is max_new long."""
    from projected_grpo import rollout, sampler

    def sample_no_eos(model, prompts, max_new, eos_id, pad_id, *a, **k):
        return sampler.sample(model, prompts, max_new, -1, pad_id, *a, **k)

    rollout.sample = sample_no_eos


def project_trainer(P: int, G: int, max_new: int, extra=(), threads: int = 1):
    """A real Trainer on the tiny model: P prompts x G student completions (no teacher pool), grader stubbed."""
    from projected_grpo.loop import Trainer
    from projected_grpo.setup import build_setup

    cache = os.environ.setdefault("PROJECTED_GRPO_CACHE", str(Path.home() / ".cache" / "projected_grpo"))
    cfg = compose([
        "model=tiny", f"trainer.prompts_per_step={P}", f"trainer.group={G}", f"trainer.max_new_tokens={max_new}",
        "teacher.enabled=false", "trainer.mix_ratio=0", "env.n_workers=1", "trainer.beta=0", "logger=none",
        f"trainer.torch_threads={threads}", "trainer.eval_every=0", "trainer.ckpt_every=0", f"paths.cache_dir={cache}",
        *extra,
    ])  # fmt: skip
    s = build_setup(cfg, Path(tempfile.mkdtemp(prefix="pg_bench_")))
    tr = Trainer(cfg, s)
    stub_grader(tr)
    return cfg, s, tr


def fixed_batch(args, teacher_half: bool = False):
    """A project Trainer (args: prompts, group, max_new, threads) and one batch of its rollouts with constant
    rewards, so every arm of a bench backpropagates the same thing; teacher_half marks the second half of each
    group as teacher samples (two sources)."""
    import torch

    torch.set_num_threads(args.threads)
    force_full_length()
    _, _, tr = project_trainer(args.prompts, args.group, args.max_new, threads=args.threads)
    rollouts = tr.rollouts({})
    for r in rollouts:
        if teacher_half:
            r.is_teacher = [i >= len(r.is_teacher) // 2 for i in range(len(r.is_teacher))]
        r.ready().rewards = const_rewards(len(r.rewards))
    return tr, rollouts


def clock() -> float:
    return time.perf_counter()


def bench_parser(doc: str, reps: int):
    """The CLI every timed benchmark shares: --max-new tokens, --reps, --threads, --quick."""
    import argparse

    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--max-new", type=int, default=128)
    p.add_argument("--reps", type=int, default=reps)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true")
    return p


def parse_quick(p, argv, quick_reps: int):
    """Parse; --quick means `quick_reps` reps of 64 new tokens."""
    args = p.parse_args(argv)
    if args.quick:
        args.reps, args.max_new = quick_reps, 64
    return args


def step_args(doc: str, argv=None):
    """The shared CLI of the step benchmarks (P prompts x G completions x max_new tokens, reps, threads)."""
    p = bench_parser(doc, reps=7)
    p.add_argument("--prompts", type=int, default=2)
    p.add_argument("--group", type=int, default=8)
    return parse_quick(p, argv, quick_reps=5)
