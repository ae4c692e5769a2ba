"""CLI:  python -m projected_grpo.hypotheses RUN_DIR [RUN_DIR ...] [--n-null N] [--out DIR]

Scores candidate bases on what each run learned (its knob snapshots; train with trainer.snapshot_every=N) and
writes hypotheses.md, hypotheses.csv and two plots into --out (default: the first run dir)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from omegaconf import OmegaConf
from tqdm import tqdm

MIN_NULL = 100


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m projected_grpo.hypotheses", description=__doc__.split("\n\n")[1])
    p.add_argument("runs", nargs="+", type=Path, help="finished run dirs (with snapshots/)")
    p.add_argument("--n-null", type=int, default=128, help=f"random bases per (module, rank); >= {MIN_NULL}")
    p.add_argument("--out", type=Path, default=None, help="output dir (default: the first run dir)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    a = p.parse_args(argv)
    if a.n_null < MIN_NULL:
        p.error(f"--n-null={a.n_null}: expected >= {MIN_NULL} random bases for a usable null std")
    return a


def setup_key(cfg) -> str:
    """What the candidate bases depend on: the base model, the problems and the v_hack config."""
    c = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    return json.dumps({k: c[k] for k in ("model", "vhack", "env", "reward_mode", "paths")}, sort_keys=True)


def main(argv: list[str] | None = None) -> int:
    a = parse(list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    from projected_grpo.adapter import adapter_modules
    from projected_grpo.hypotheses.analyze import analyse_run, load_run
    from projected_grpo.hypotheses.bases import model_bases
    from projected_grpo.hypotheses.report import write_all
    from projected_grpo.setup import build_setup

    runs = [load_run(p) for p in a.runs]  # fail on a bad dir before any model work
    cache: dict[str, tuple] = {}
    results, trajs, defs = [], [], {}
    bar = tqdm(runs, desc="hypotheses", dynamic_ncols=True)
    for run in bar:
        key = setup_key(run.cfg)
        if key not in cache:
            bar.set_postfix_str("building bases")
            torch.manual_seed(0)
            s = build_setup(run.cfg, run.path, with_v_hack=False)
            cache[key] = (
                *model_bases(run.cfg, s.model, s.tokenizer, s.problems, s.cache_dir),
                adapter_modules(s.model),
            )
        bases, X_act, modules = cache[key]
        bar.set_postfix_str(f"{run.arm} seed {run.seed}")
        res, traj, used = analyse_run(run, bases, X_act, modules, a.n_null)
        results += res
        trajs.append(traj)
        defs.update({b.name: b for b in used})
    out = a.out or runs[0].path
    paths = write_all(out, results, trajs, list(defs.values()), [str(r.path) for r in runs], a.n_null)
    print("\n".join(f"wrote {p}" for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
