"""v_hack extraction speed: batched per-completion δS gradients (one forward/backward) vs one completion at a time.

Tiny embedded model (default config), 12 contrastive pairs = 24 completions, 1 torch thread, median of several
runs in one process. Last line: JSON with ratio (loop s / batched s), max_abs_diff and the raw medians.

Share of a default run (--share, on by default; --no-share skips it): the default config's v_hack extraction as
setup does it on a miss (vhack.get_v_hack into a fresh cache dir, SVDs cached), timed in this process, and one
default run (`python train.py`, its own process, the v_hack cache warm) whose summary.json wall_seconds is read;
extraction share = extract_s / (wall_s + extract_s), i.e. of a default run that extracts. A refresh
(vhack.refresh_every) re-extracts the same way, so refresh_share_every_5 = what refresh_every=5 would add over the
default's 20 steps: 4 refreshes (steps 5, 10, 15, 20) x extract_s, as a share of that run (an estimate from the
measured extract_s; the default run has refresh_every=0, no refresh).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch

N_PAIRS, N_BATCHED, N_LOOP = 12, 5, 3


def run_share(cfg, model, tok) -> dict:
    """Extraction (and refresh) cost as a share of a default run's wall time (see the module docstring)."""
    from projected_grpo.env.problems import load_problem_set
    from projected_grpo.vhack import get_v_hack

    cache_dir = Path(cfg.paths.cache_dir).expanduser()
    data = load_problem_set(cfg.env, list(cfg.reward_mode.modes), cache_dir)
    with tempfile.TemporaryDirectory(prefix="pg_extract_") as tmp:
        t0 = time.perf_counter()
        get_v_hack(cfg, model, tok, data.problems, Path(tmp))  # a miss: extraction as a fresh run's setup does it
        extract_s = time.perf_counter() - t0
        run = Path(tmp) / "run"
        env = dict(os.environ, PROJECTED_GRPO_CACHE=str(cache_dir), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        subprocess.run([sys.executable, "train.py", f"hydra.run.dir={run}"], cwd=REPO, env=env, check=True,
                       capture_output=True)  # fmt: skip
        wall_s = float(json.loads((run / "summary.json").read_text())["wall_seconds"])
        steps = int(cfg.trainer.steps)
    n_refresh = steps // 5
    return {
        "extract_s": extract_s,
        "default_run_wall_s": wall_s,
        "extract_share": extract_s / (wall_s + extract_s),
        "refresh_share_every_5": n_refresh * extract_s / (wall_s + (n_refresh + 1) * extract_s),
        "n_refresh_every_5": n_refresh,
    }


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--no-share", action="store_true", help="skip the share-of-a-default-run measurement")
    args = ap.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    from projected_grpo.adapter import wrap_model
    from projected_grpo.env.completions import contrastive_pairs
    from projected_grpo.env.problems import embedded_problems
    from projected_grpo.model import build_model
    from projected_grpo.modes import ALL_MODES
    from projected_grpo.vhack import MICRO_BATCH, per_completion_grads, per_completion_grads_loop
    from tests.conftest import compose

    cfg = compose()
    cache_dir = Path(cfg.paths.cache_dir).expanduser()
    model, tok = build_model(cfg.model, cache_dir)
    wrap_model(model, list(cfg.model.target_suffixes), cache_dir)
    pairs = contrastive_pairs(embedded_problems(), list(ALL_MODES))[:N_PAIRS]

    def timed(fn, n):
        times, out = [], None
        for _ in range(n):
            t0 = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t0)
        return statistics.median(times), out

    timed(lambda: per_completion_grads(model, tok, pairs[:2]), 1)  # warm-up
    # as used by get_v_hack: length-sorted micro-batches of MICRO_BATCH completions
    batched_s, G = timed(lambda: per_completion_grads(model, tok, pairs, MICRO_BATCH), N_BATCHED)
    one_s, G1 = timed(lambda: per_completion_grads(model, tok, pairs, None), N_BATCHED)  # all 24 in one batch
    loop_s, L = timed(lambda: per_completion_grads_loop(model, tok, pairs), N_LOOP)
    diff = max(float((g[n] - L[n]).abs().max()) for g in (G, G1) for n in g)
    res = {
        "ratio": loop_s / batched_s,
        "max_abs_diff": diff,
        "max_abs_grad": max(float(L[n].abs().max()) for n in L),
        "batched_median_s": batched_s,
        "micro_batch": MICRO_BATCH,
        "one_batch_median_s": one_s,
        "ratio_one_batch": loop_s / one_s,
        "loop_median_s": loop_s,
        "n_completions": 2 * len(pairs),
        "threads": torch.get_num_threads(),
    }
    if not args.no_share:
        res.update(run_share(cfg, model, tok))
        print(f"extraction {res['extract_s']:.1f}s = {res['extract_share']:.1%} of a default run that extracts "
              f"(run {res['default_run_wall_s']:.1f}s with a cached v_hack); refresh_every=5 would add "
              f"{res['n_refresh_every_5']} refreshes = {res['refresh_share_every_5']:.1%}")  # fmt: skip
    print(
        f"batched (micro_batch={MICRO_BATCH}) {batched_s:.3f}s  one batch {one_s:.3f}s  loop {loop_s:.3f}s  "
        f"ratio {res['ratio']:.2f}x (one batch {res['ratio_one_batch']:.2f}x)  max|diff| {diff:.2e}"
    )
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
