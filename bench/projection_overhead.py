#!/usr/bin/env python
"""Step cost of the projection arms vs projection=none, on the same cached rollouts and the same knob state.

A step here = `Trainer.backward(rollouts)` + `Trainer.optimizer_step()` (the real loop code: Dr.GRPO backward
with per-source grads, then projection in grad space (or on AdamW's update for space=update), clip, AdamW).
Generation is NOT in the step: the rollouts (P x G x N, default 2 x 8 x 128, rewards alternating 0/1) are
sampled once and shared, so the ratio isolates projection + optimizer cost. One Trainer per arm on the same
model and v_hack; before every timed step the knobs are reset to the same snapshot, so every arm computes the
same backward. Arms alternate in one process; medians over --reps after a warm-up round; --threads (default 1).
ratio = erase / none (limit 1.00 means "no more than none + noise"; target <= 1.03); route and
space=update ratios are reported too.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C

ARMS = {
    "none": ["projection=none"],
    "erase": ["projection=erase"],
    "route": ["projection=route"],
    "erase_update": ["projection=erase", "projection.space=update"],
}


def main(argv=None):
    args = C.step_args(__doc__, argv)

    import torch

    from projected_grpo.loop import Trainer

    torch.set_num_threads(args.threads)
    C.force_full_length()
    cfg0, s, tr0 = C.project_trainer(args.prompts, args.group, args.max_new, ARMS["none"], threads=args.threads)
    rollouts = tr0.rollouts({})
    for r in rollouts:
        r.ready().rewards = C.const_rewards(len(r.rewards))
    trainers = {"none": tr0}
    for arm, ov in ARMS.items():
        if arm != "none":
            cfg = C.compose(_overrides(cfg0) + ov)
            trainers[arm] = Trainer(cfg, s)
    snap = {n: (m.delta_s.detach().clone(), m.delta_s_hack.detach().clone()) for n, m in tr0.modules.items()}

    def step(tr):
        with torch.no_grad():
            for n, m in tr.modules.items():
                m.delta_s.copy_(snap[n][0])
                m.delta_s_hack.copy_(snap[n][1])
        t = C.clock()
        tr.backward(rollouts)
        proj = tr.optimizer_step()
        return C.clock() - t, proj["sec_projection"]

    times = {a: [] for a in trainers}
    proj_s = {a: [] for a in trainers}
    for rep in range(args.reps + 1):
        for arm, tr in trainers.items():
            dt, sp = step(tr)
            if rep:
                times[arm].append(dt)
                proj_s[arm].append(sp)
    for tr in trainers.values():
        tr.close()
    med = {a: C.median(v) for a, v in times.items()}
    ratios = {a: med[a] / med["none"] for a in trainers}
    for a in trainers:
        print(f"{a:>13}: {med[a]:.4f} s/step (projection {C.median(proj_s[a]) * 1e3:.2f} ms)  ÷ none {ratios[a]:.3f}")
    print(json.dumps({"ratio": ratios["erase"], "target": 1.03, "ratios": ratios, "median_s": med,
                      "median_sec_projection": {a: C.median(v) for a, v in proj_s.items()},
                      "shape": f"{args.prompts}x{args.group}x{args.max_new}", "reps": args.reps,
                      "threads": args.threads}))  # fmt: skip


def _overrides(cfg) -> list[str]:
    """The trainer overrides of the base config (everything but projection), for composing the other arms."""
    t = cfg.trainer
    return [
        "model=tiny", f"trainer.prompts_per_step={t.prompts_per_step}", f"trainer.group={t.group}",
        f"trainer.max_new_tokens={t.max_new_tokens}", "teacher.enabled=false", "trainer.mix_ratio=0",
        "env.n_workers=1", "trainer.beta=0", "logger=none", f"trainer.torch_threads={t.torch_threads}",
        "trainer.eval_every=0", "trainer.ckpt_every=0", f"paths.cache_dir={cfg.paths.cache_dir}",
    ]  # fmt: skip


if __name__ == "__main__":
    main()
