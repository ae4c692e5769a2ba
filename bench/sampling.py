#!/usr/bin/env python
"""Completion tokens/s of the project's sampling path, wrapped vs bare, and vs transformers `generate`.

  A  wrapped: the tiny model wrapped with AntiPaSTO adapters, knobs non-zero (seeded N(0, 0.1)),
     `with adapter.folded(model): sampler.sample(...)`; fold + unfold are inside the timed region.
  B  bare: the same tiny model (same init seed) unwrapped, `sampler.sample(...)`.
  C  generate: the bare model, `model.generate(do_sample=True, top_k=0, top_p=1, min_new_tokens=N)`.
All: B x N completion tokens per call (rows x tokens, default 8 x 128, eos never stops a row), one fixed
rendered train prompt per row, temperature 1, --threads torch threads (default 1); A/B/C alternate in one
process, medians over --reps after one warm-up round.
ratio = tokens/s(A) / tokens/s(B) (target >= 0.90); also reported: A / C and B / C.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C


def main(argv=None):
    p = C.bench_parser(__doc__, reps=5)
    p.add_argument("--rows", type=int, default=8)
    args = C.parse_quick(p, argv, quick_reps=3)

    import os

    import torch

    from projected_grpo.adapter import adapter_modules, folded, wrap_model
    from projected_grpo.env.problems import load_problems
    from projected_grpo.model import build_model
    from projected_grpo.sampler import sample
    from projected_grpo.tokens import prompt_ids

    torch.set_num_threads(args.threads)
    cache = Path(os.environ.setdefault("PROJECTED_GRPO_CACHE", str(Path.home() / ".cache" / "projected_grpo")))
    cfg = C.compose(["model=tiny"])
    bare, tok = build_model(cfg.model, cache)
    wrapped, _ = build_model(cfg.model, cache)
    wrap_model(wrapped, list(cfg.model.target_suffixes), cache)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in adapter_modules(wrapped).values():
            m.delta_s.normal_(0, 0.1, generator=g)
    prob = next(p for p in load_problems(cfg.env, list(cfg.reward_mode.modes)) if p.split == "train")
    prompt = prompt_ids(tok, prob)
    prompts = [prompt] * args.rows
    N, pad = args.max_new, tok.pad_token_id
    ids = torch.tensor(prompts)
    attn = torch.ones_like(ids)

    def run_wrapped():
        with folded(wrapped):
            return sample(wrapped, prompts, N, -1, pad, 1.0, torch.Generator().manual_seed(1))

    def run_bare():
        return sample(bare, prompts, N, -1, pad, 1.0, torch.Generator().manual_seed(1))

    def run_generate():
        with torch.no_grad():
            out = bare.generate(input_ids=ids, attention_mask=attn, do_sample=True, top_k=0, top_p=1.0,
                                temperature=1.0, max_new_tokens=N, min_new_tokens=N, pad_token_id=pad)  # fmt: skip
        return out[:, ids.shape[1] :].tolist()

    runs = {"wrapped": run_wrapped, "bare": run_bare, "generate": run_generate}
    times = {k: [] for k in runs}
    for rep in range(args.reps + 1):
        for k, f in runs.items():
            t = C.clock()
            out = f()
            dt = C.clock() - t
            assert all(len(r) == N for r in out), k
            if rep:  # rep 0 is the warm-up
                times[k].append(dt)
    tps = {k: args.rows * N / C.median(v) for k, v in times.items()}
    for k in runs:
        print(f"{k:>9}: {tps[k]:8.1f} completion tokens/s  (median {C.median(times[k]):.3f} s per {args.rows}x{N})")
    res = {
        "ratio": tps["wrapped"] / tps["bare"],
        "target": 0.90,
        "wrapped_over_generate": tps["wrapped"] / tps["generate"],
        "bare_over_generate": tps["bare"] / tps["generate"],
        "tokens_per_s": tps,
        "median_s": {k: C.median(v) for k, v in times.items()},
        "rows": args.rows,
        "max_new": N,
        "prompt_tokens": len(prompt),
        "reps": args.reps,
        "threads": args.threads,
    }
    print(f"wrapped/bare {res['ratio']:.3f}  wrapped/generate {res['wrapped_over_generate']:.3f}  "
          f"bare/generate {res['bare_over_generate']:.3f}")  # fmt: skip
    print(json.dumps(res))


if __name__ == "__main__":
    main()
