#!/usr/bin/env python
"""The GRPO backward's training paths, same rollouts, same process: the folded adapter forward
(trainer.folded_forward) and the shared-prompt backward (trainer.shared_prompt_backward), each against the path before it.

A step here = `Trainer.backward(rollouts)` + `Trainer.optimizer_step()` (Dr.GRPO backward with per-source δS
gradients, projection=erase, clip, AdamW) on P x G x N rollouts (default 2 x 8 x 128, rewards alternating 0/1, the
second half of each group marked teacher: two sources, so the shared path runs two prompt rows) sampled once. The
knobs start at a small random δS (so W' != W) and move with every step, so each folded step refolds W' as in training.
Three paths alternate on one Trainer, medians over --reps after a warm-up round; --threads (default 1):
  unfolded: W x + U(knob ⊙ Vh x), the prompt once per completion (packed batch);
  folded:   W' x with the knob gradient from the backward, packed batch;
  shared:   folded, the prompt once per source with its K/V shared by the completions (the default).
ratio = folded / unfolded and shared / folded (target: < 1 each). Also prints the largest relative difference of each
pair's δS gradients on the same knobs (float rounding only).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

PATHS = {"unfolded": (False, False), "folded": (True, False), "shared": (True, True)}  # (fold, shared prompt)


def use(tr, path: str) -> None:
    from projected_grpo.adapter import set_fold_train

    fold, shared = PATHS[path]
    set_fold_train(tr.model, fold)
    tr.t.shared_prompt_backward = shared


def main(argv=None):
    args = C.step_args(__doc__, argv)

    import torch

    from projected_grpo.adapter import adapter_modules

    tr, rollouts = C.fixed_batch(args, teacher_half=True)
    mods = adapter_modules(tr.model)
    with torch.no_grad():
        for m in mods.values():
            m.delta_s.normal_(0.0, 0.01, generator=torch.Generator().manual_seed(0))
    grads = {}
    for path in PATHS:  # the same knobs: the gradients agree to float rounding
        use(tr, path)
        tr.backward(rollouts)
        grads[path] = {n: m.delta_s.grad.clone() for n, m in mods.items()}

    def rel(a: str, b: str) -> float:
        return max(float((grads[a][n] - grads[b][n]).norm() / grads[b][n].norm().clamp(min=1e-30)) for n in mods)

    times = {path: [] for path in PATHS}
    for rep in range(args.reps + 1):
        for path in PATHS:
            use(tr, path)
            t = C.clock()
            tr.backward(rollouts)
            tr.optimizer_step()
            if rep:
                times[path].append(C.clock() - t)
    tr.close()
    s = {path: C.median(t) for path, t in times.items()}
    ratios = {"folded/unfolded": s["folded"] / s["unfolded"], "shared/folded": s["shared"] / s["folded"]}
    diffs = {"folded/unfolded": rel("folded", "unfolded"), "shared/folded": rel("shared", "folded")}
    print("  ".join(f"{p} {v:.4f} s/step" for p, v in s.items()) + "  " +
          "  ".join(f"{k} {ratios[k]:.3f} (max rel grad diff {diffs[k]:.2e})" for k in ratios))  # fmt: skip
    print(json.dumps({"ratio": max(ratios.values()), "target": 1.0, "ratios": ratios, "median_s": s,
                      "max_rel_grad_diff": diffs, "shape": f"{args.prompts}x{args.group}x{args.max_new}",
                      "reps": args.reps, "threads": args.threads}))  # fmt: skip


if __name__ == "__main__":
    main()
