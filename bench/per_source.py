#!/usr/bin/env python
"""Cost of per-source (student / teacher) δS gradients from one backward vs one plain backward.

  split: `Trainer.backward(rollouts)` as the loop runs it: Dr.GRPO loss, one backward per prompt inside
         `pergrad.grouped_grads` (per-row h ⊙ ∂L/∂z reduced into a student and a teacher sum per module).
  plain: the same `Trainer.backward` with `grouped_grads` replaced by a no-op context (no capture hooks):
         one plain backward of the combined loss per prompt, δS .grad only.
Same cached rollouts for both (P x G x N, default 2 x 8 x 128, generated once with the real sampler; half of
each group relabelled teacher so both sources are non-empty; rewards alternate 0/1 so no group is skipped),
same knob state, --threads torch threads (default 1), split/plain alternating, medians over --reps after a warm-up.
ratio = split / plain (target <= 1.10). Also checks that student + teacher == the plain .grad.
"""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C


class _NoStore:
    def __init__(self):
        self.grads, self.onehot = {}, None

    def set_groups(self, *a):
        pass


@contextmanager
def _no_grouped_grads(model, groups=None, batch=None):
    yield _NoStore()


def main(argv=None):
    args = C.step_args(__doc__, argv)


    from projected_grpo import loss

    tr, rollouts = C.fixed_batch(args, teacher_half=True)
    real = loss.grouped_grads

    def split():
        loss.grouped_grads = real
        return tr.backward(rollouts)

    def plain():
        loss.grouped_grads = _no_grouped_grads
        try:
            return tr.backward(rollouts)
        finally:
            loss.grouped_grads = real

    # correctness: the per-source sums add up to the plain gradient
    b = split()
    g_plain = {n: m.delta_s.grad.clone() for n, m in tr.modules.items()}
    err = max(float((b["g_s"][n] + b["g_t"][n] - g_plain[n]).abs().max()) for n in tr.modules)
    scale = max(float(g.abs().max()) for g in g_plain.values())
    times = {"split": [], "plain": []}
    for rep in range(args.reps + 1):
        for k, f in (("split", split), ("plain", plain)):
            t = C.clock()
            f()
            if rep:
                times[k].append(C.clock() - t)
    tr.close()
    med = {k: C.median(v) for k, v in times.items()}
    ratio = med["split"] / med["plain"]
    print(f"split (per-source, one backward): {med['split']:.4f} s   plain backward: {med['plain']:.4f} s   "
          f"ratio {ratio:.3f}   |g_s+g_t-g| max {err:.2e} (|g| max {scale:.2e})")  # fmt: skip
    print(json.dumps({"ratio": ratio, "target": 1.10, "median_s": med, "max_abs_err": err, "grad_scale": scale,
                      "shape": f"{args.prompts}x{args.group}x{args.max_new}", "reps": args.reps,
                      "threads": args.threads}))  # fmt: skip


if __name__ == "__main__":
    main()
