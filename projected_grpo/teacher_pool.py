"""The teacher pool: per problem, a frozen set of graded scripted completions mixed into GRPO groups.

Per problem, ``n_per_problem`` completions: ``round(n * frac_hack)`` hacks of the problem's own mode,
``round(n * frac_honest)`` honest ones and the rest wrong ones (variants cycle). ``teacher.modes`` restricts hacks to a
subset of modes: a problem whose mode is outside it gets honest and wrong completions only, its hack slots shared in
the ratio frac_honest : frac_wrong (evenly when both are 0). Every completion is graded once, under the problem's mode.

The pool is cached as JSON in ``cache_dir``, keyed by a hash of the problems (ids, modes, canonicals, tests), the
TeacherConfig fields, COMPLETIONS_VERSION, GRADER_VERSION and POOL_FORMAT; written atomically (temp file + os.replace)
with a content checksum (integrity.py) that is verified at load, non-finite rewards refused. A cache file whose stored
key differs from its name's key, or whose content does not match its checksum, is an error, never overwritten.

    python -m projected_grpo.teacher_pool build [--cache-dir DIR] [--modes run_tests sentinel] [--n-per-problem 8]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from projected_grpo.atomic import write_json
from projected_grpo.config import TeacherConfig
from projected_grpo.env import completions
from projected_grpo.env.grader import GRADER_VERSION
from projected_grpo.env.problem import Problem
from projected_grpo.integrity import IntegrityError, load_json, where, with_checksum
from projected_grpo.modes import MIXED_MODES, MODES, Mode, parse_modes

KINDS = ("hack", "honest", "wrong")
POOL_FORMAT = 2  # 2: the file carries a content checksum (part of the key, so format-1 files are never read)
POOL_KEY = "paths.cache_dir (the teacher pool cache, teacher.*)"


@dataclass(frozen=True)
class TeacherSample:
    completion: str
    reward: float
    passed: bool
    gt_correct: bool
    exploited: bool
    kind: str  # "hack" | "honest" | "wrong"


def _teacher_fields(cfg: TeacherConfig) -> dict:
    modes = None if cfg.modes is None else sorted(Mode(m).value for m in cfg.modes)
    return {
        "enabled": bool(cfg.enabled),
        "n_per_problem": int(cfg.n_per_problem),
        "frac_hack": float(cfg.frac_hack),
        "frac_honest": float(cfg.frac_honest),
        "modes": modes,
    }


def pool_key(problems: Sequence[Problem], cfg: TeacherConfig) -> str:
    payload = {
        "problems": [
            [p.id, p.mode.value if p.mode else None, p.setup_code, p.canonical, [list(t) for t in p.tests]]
            for p in problems
        ],
        "teacher": _teacher_fields(cfg),
        "completions_version": completions.COMPLETIONS_VERSION,
        "grader_version": GRADER_VERSION,
        "pool_format": POOL_FORMAT,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def plan_counts(cfg: TeacherConfig, with_hacks: bool) -> dict[str, int]:
    """How many completions of each kind one problem gets."""
    n = int(cfg.n_per_problem)
    frac_wrong = max(0.0, 1.0 - cfg.frac_hack - cfg.frac_honest)
    if with_hacks:
        n_hack = round(n * cfg.frac_hack)
        n_honest = min(n - n_hack, round(n * cfg.frac_honest))
    else:
        n_hack = 0
        share = cfg.frac_honest / (cfg.frac_honest + frac_wrong) if cfg.frac_honest + frac_wrong > 0 else 0.5
        n_honest = round(n * share)
    return {"hack": n_hack, "honest": n_honest, "wrong": n - n_hack - n_honest}


def plan_completions(problem: Problem, cfg: TeacherConfig) -> list[tuple[str, str]]:
    """(kind, completion) for one problem, deterministic."""
    if problem.mode is None:
        raise ValueError(f"problem {problem.id} has no mode; run problems.assign_modes (load_problems does) first")
    allowed = None if cfg.modes is None else set(parse_modes(cfg.modes))
    loophole = MODES[problem.mode].loophole  # reward_mode=none: no hack exists, honest and wrong only
    counts = plan_counts(cfg, with_hacks=loophole and (allowed is None or problem.mode in allowed))
    out = [("hack", completions.hack(problem, problem.mode, v)) for v in range(counts["hack"])]
    out += [("honest", completions.honest(problem, v)) for v in range(counts["honest"])]
    out += [("wrong", completions.wrong(problem, v)) for v in range(counts["wrong"])]
    return out


class TeacherPool:
    def __init__(self, key: str, samples: dict[str, list[TeacherSample]], path: Path | None = None):
        self.key, self.samples, self.path = key, samples, path

    def sample(self, problem_id: str, n: int, rng: random.Random) -> list[TeacherSample]:
        """`n` distinct samples of one problem, drawn with `rng`."""
        if problem_id not in self.samples:
            raise KeyError(
                f"teacher pool has no problem {problem_id!r}; it was built for {len(self.samples)} "
                f"other problems (rebuild it for the current env.source / reward_mode)"
            )
        pool = self.samples[problem_id]
        if n > len(pool):
            raise ValueError(
                f"asked for {n} teacher samples of {problem_id} but the pool holds {len(pool)}; "
                f"raise teacher.n_per_problem to at least {n}"
            )
        return rng.sample(pool, n)

    def __len__(self) -> int:
        return sum(len(v) for v in self.samples.values())

    def to_json(self) -> dict:
        return with_checksum(
            {
                "key": self.key,
                "grader_version": GRADER_VERSION,
                "problems": {pid: [asdict(s) for s in ss] for pid, ss in self.samples.items()},
            }
        )


def pool_path(cache_dir: str | Path, key: str) -> Path:
    return Path(cache_dir).expanduser() / f"teacher_pool-{key[:16]}.json"


def _load(path: Path, key: str) -> TeacherPool:
    fix = f"Delete it (rm {path}); the next run rebuilds it."
    data = load_json(path, POOL_KEY, fix)  # checksum verified, every number finite
    stored = data.get("key")
    if stored != key:
        raise ValueError(
            f"teacher pool cache {path} holds key {str(stored)[:16]}... but this run needs {key[:16]}...; the file "
            f"was edited or is a hash-prefix collision. Delete it (or pick another cache dir) to rebuild; refusing "
            f"to overwrite it"
        )
    try:
        samples = {pid: [TeacherSample(**s) for s in ss] for pid, ss in data["problems"].items()}
    except (KeyError, TypeError, AttributeError) as e:
        raise IntegrityError(f"{where(path, POOL_KEY)}: the samples do not have the TeacherSample fields ({e}). {fix}") from e
    return TeacherPool(key, samples, path)


def build_pool(problems: Sequence[Problem], teacher_cfg: TeacherConfig, grader, cache_dir: str | Path) -> TeacherPool:
    """Load the pool for (problems, teacher_cfg) from `cache_dir`, or build, grade and store it."""
    key = pool_key(problems, teacher_cfg)
    path = pool_path(cache_dir, key)
    if path.exists():
        return _load(path, key)
    items, owners = [], []
    for p in problems:
        for kind, completion in plan_completions(p, teacher_cfg):
            items.append((completion, p, p.mode))
            owners.append((p.id, kind))
    rewards = grader.grade_batch(items)
    samples: dict[str, list[TeacherSample]] = {p.id: [] for p in problems}
    for (completion, _, _), (pid, kind), r in zip(items, owners, rewards):
        samples[pid].append(TeacherSample(completion, r.reward, r.passed, r.gt_correct, r.exploited, kind))
    pool = TeacherPool(key, samples, path)
    write_json(path, pool.to_json())
    return pool


def default_cache_dir() -> Path:
    root = os.environ.get("PROJECTED_GRPO_CACHE") or str(Path.home() / ".cache" / "projected_grpo")
    return Path(root) / "teacher_pool"


def main(argv: list[str] | None = None) -> int:
    from projected_grpo.config import EnvConfig
    from projected_grpo.env.grader import Grader
    from projected_grpo.env.problems import load_problems

    d = TeacherConfig()
    parser = argparse.ArgumentParser(prog="python -m projected_grpo.teacher_pool")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build (or load) the teacher pool and print a summary")
    b.add_argument("--cache-dir", default=str(default_cache_dir()))
    b.add_argument("--source", default=EnvConfig.source, help="'embedded', an rl-rewardhacking .jsonl or a hub id")
    b.add_argument(
        "--reward-modes",
        nargs="+",
        default=[m.value for m in MIXED_MODES],
        help="modes the problems are partitioned across (reward_mode.modes)",
    )
    b.add_argument("--modes", nargs="+", default=None, help="restrict the pool's hacks to these modes (teacher.modes)")
    b.add_argument("--n-per-problem", type=int, default=d.n_per_problem)
    b.add_argument("--frac-hack", type=float, default=d.frac_hack)
    b.add_argument("--frac-honest", type=float, default=d.frac_honest)
    b.add_argument("--workers", type=int, default=EnvConfig.n_workers)
    args = parser.parse_args(argv)
    cfg = dataclasses.replace(
        d,
        n_per_problem=args.n_per_problem,
        frac_hack=args.frac_hack,
        frac_honest=args.frac_honest,
        modes=None if args.modes is None else list(parse_modes(args.modes)),
    )
    env = EnvConfig(source=args.source, n_workers=args.workers)
    problems = load_problems(env, parse_modes(args.reward_modes))
    with Grader(n_workers=env.n_workers, time_floor_s=env.time_floor_s, time_factor=env.time_factor) as grader:
        pool = build_pool(problems, cfg, grader, args.cache_dir)
    counts = {k: sum(s.kind == k for ss in pool.samples.values() for s in ss) for k in KINDS}
    exploited = sum(s.exploited for ss in pool.samples.values() for s in ss)
    print(
        f"teacher pool {pool.path}: {len(pool.samples)} problems, {len(pool)} samples {counts}, exploited={exploited}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
