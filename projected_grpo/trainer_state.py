"""What a checkpoint holds of a Trainer (knobs, AdamW, schedule, every RNG, v_hack, route2, evals so far) and how
a resumed Trainer gets it back; the file format itself is checkpoint.py."""

from __future__ import annotations

import logging
import os

import torch

from projected_grpo import checkpoint

log = logging.getLogger(__name__)


def save(tr) -> None:
    """checkpoint.safetensors (checkpoint.py): tensors + JSON only, checksummed, written atomically."""
    state = {
        "step": tr.step,
        "knobs": {n: (m.delta_s.detach().clone(), m.delta_s_hack.detach().clone()) for n, m in tr.modules.items()},
        "opt": tr.opt.state_dict(),
        "sched": tr.sched.state_dict(),
        "rng_py": tr.rng.getstate(),
        "rng_gen": tr.gen.get_state(),
        "rng_torch": torch.get_rng_state(),
        "v": tr.v,
        "basis_overlap": tr.basis_overlap,
        "deploy_evals": tr.deploy_evals,
        "route2": tr.route2.state_dict() if tr.route2 is not None else None,
        "drift": tr.drift.state_dict(),
        "config": checkpoint.config_fingerprint(tr.cfg),
    }
    checkpoint.save(tr.ckpt_path, state)


def restore(tr, state: dict | None) -> None:
    """Restore trainer tr's state from a checkpoint.preflight result (None: a fresh run)."""
    if state is None:
        return
    with torch.no_grad():
        for n, m in tr.modules.items():
            m.delta_s.copy_(state["knobs"][n][0])
            m.delta_s_hack.copy_(state["knobs"][n][1])
    tr.opt.load_state_dict(state["opt"])
    tr.sched.load_state_dict(state["sched"])
    tr.rng.setstate(state["rng_py"])
    tr.gen.set_state(state["rng_gen"])
    torch.set_rng_state(state["rng_torch"])
    tr.v = {n: t.to(tr.device) for n, t in state["v"].items()}
    tr.basis_overlap = state["basis_overlap"]
    if tr.route2 is not None:
        tr.route2.load_state_dict(state["route2"])
    tr.drift.load_state_dict(state.get("drift"))  # absent in checkpoints from before the drift diagnostic
    tr.deploy_evals = state["deploy_evals"]
    tr.step = state["step"]
    # SLURM_RESTART_COUNT: how often SLURM requeued this job (preemption / timeout), absent outside SLURM
    msg = f"resumed from {tr.ckpt_path} at step {tr.step} (SLURM_RESTART_COUNT={os.environ.get('SLURM_RESTART_COUNT', '-')})"
    log.info(msg)
    print(msg)
