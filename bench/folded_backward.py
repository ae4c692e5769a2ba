#!/usr/bin/env python
"""The folded training forward (trainer.folded_forward=true) vs the unfolded adapter, same rollouts, same process.

A step here = `Trainer.backward(rollouts)` + `Trainer.optimizer_step()` (Dr.GRPO backward with per-source δS
gradients, projection=erase, clip, AdamW) on P x G x N rollouts (default 2 x 8 x 128, rewards alternating 0/1) sampled
once. The knobs start at a small random δS (so W' != W) and move with every step, so each folded step refolds W' as
in training. The two paths alternate on one Trainer (adapter.set_fold_train), medians over --reps after a warm-up
round; --threads (default 1). ratio = folded / unfolded (target: < 1). Also prints the largest relative difference of
the two paths' δS gradients on the same knobs (float rounding only).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C


def main(argv=None):
    args = C.step_args(__doc__, argv)

    import torch

    from projected_grpo.adapter import adapter_modules, set_fold_train

    tr, rollouts = C.fixed_batch(args)
    mods = adapter_modules(tr.model)
    with torch.no_grad():
        for m in mods.values():
            m.delta_s.normal_(0.0, 0.01, generator=torch.Generator().manual_seed(0))
    grads = {}
    for fold in (True, False):  # the same knobs: the gradients agree to float rounding
        set_fold_train(tr.model, fold)
        tr.backward(rollouts)
        grads[fold] = {n: m.delta_s.grad.clone() for n, m in mods.items()}
    rel = max(float((grads[True][n] - grads[False][n]).norm() / grads[False][n].norm().clamp(min=1e-30)) for n in mods)
    times = {True: [], False: []}
    for rep in range(args.reps + 1):
        for fold in (True, False):
            set_fold_train(tr.model, fold)
            t = C.clock()
            tr.backward(rollouts)
            tr.optimizer_step()
            if rep:
                times[fold].append(C.clock() - t)
    set_fold_train(tr.model, bool(tr.t.folded_forward))
    tr.close()
    folded_s, unfolded_s = C.median(times[True]), C.median(times[False])
    print(f"folded {folded_s:.4f} s/step  unfolded {unfolded_s:.4f} s/step  ratio {folded_s / unfolded_s:.3f}  "
          f"max rel grad diff {rel:.2e}")  # fmt: skip
    print(json.dumps({"ratio": folded_s / unfolded_s, "target": 1.0, "median_s": {"folded": folded_s,
                      "unfolded": unfolded_s}, "max_rel_grad_diff": rel,
                      "shape": f"{args.prompts}x{args.group}x{args.max_new}", "reps": args.reps,
                      "threads": args.threads}))  # fmt: skip


if __name__ == "__main__":
    main()
