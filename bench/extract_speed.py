"""v_hack extraction speed: batched per-completion δS gradients (one forward/backward) vs one completion at a time.

Tiny embedded model (default config), 12 contrastive pairs = 24 completions, 1 torch thread, median of several
runs in one process. Last line: JSON with ratio (loop s / batched s), max_abs_diff and the raw medians.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch

N_PAIRS, N_BATCHED, N_LOOP = 12, 5, 3


def main() -> dict:
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    from projected_grpo.adapter import wrap_model
    from projected_grpo.env.completions import contrastive_pairs
    from projected_grpo.env.problems import embedded_problems
    from projected_grpo.model import build_model
    from projected_grpo.modes import Mode
    from projected_grpo.vhack import MICRO_BATCH, per_completion_grads, per_completion_grads_loop
    from tests.conftest import compose

    cfg = compose()
    cache_dir = Path(cfg.paths.cache_dir).expanduser()
    model, tok = build_model(cfg.model, cache_dir)
    wrap_model(model, list(cfg.model.target_suffixes), cache_dir)
    pairs = contrastive_pairs(embedded_problems(), list(Mode))[:N_PAIRS]

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
    print(
        f"batched (micro_batch={MICRO_BATCH}) {batched_s:.3f}s  one batch {one_s:.3f}s  loop {loop_s:.3f}s  "
        f"ratio {res['ratio']:.2f}x (one batch {res['ratio_one_batch']:.2f}x)  max|diff| {diff:.2e}"
    )
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
