"""Knob snapshots: a run's trainable state every `trainer.snapshot_every` steps, for after-the-fact analysis
(projected_grpo.hypotheses).

One safetensors file per snapshot, <run_dir>/snapshots/step_{step:06d}.safetensors, written atomically:
    delta_s/{module}       [r]            the main knob
    delta_s_hack/{module}  [r]            the quarantine knob (route; zero in the other arms)
    A_q/{module}           [r_q, d_in]    route2's quarantine LoRA (projection=route2 only)
    B_q/{module}           [d_out, r_q]
metadata: schema, step, content checksum (verified at load, non-finite values refused). With snapshot_every=N > 0 the loop saves step 0 (before any update), every N steps
and the final step; N = 0 saves none. The knobs start at zero, so snapshot t minus snapshot 0 is the delta
learned by step t (a resumed run keeps the step-0 file it wrote first).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from projected_grpo import integrity
from projected_grpo.adapter import AntiPaSTOLinear

SCHEMA = "knob_snapshot_v2"  # v2: content checksum in the metadata (integrity.py)
SNAPSHOT_DIR = "snapshots"
KEYS = ("delta_s", "delta_s_hack", "A_q", "B_q")  # tensor-name prefixes, one per stored kind
_FILE = re.compile(r"^step_(\d{6})\.safetensors$")


class SnapshotError(ValueError):
    """A missing or malformed snapshot; says what was expected and how to get it."""


@dataclass
class Snapshot:
    step: int
    delta_s: dict[str, torch.Tensor]  # name -> [r]
    delta_s_hack: dict[str, torch.Tensor]  # name -> [r]
    A_q: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> [r_q, d_in] (route2 only)
    B_q: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> [d_out, r_q] (route2 only)


def snapshot_path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / SNAPSHOT_DIR / f"step_{step:06d}.safetensors"


def save(run_dir: Path, step: int, modules: dict[str, AntiPaSTOLinear]) -> Path:
    """Write the knobs (and route2 quarantines) of `modules` at `step`; returns the file's path."""
    t: dict[str, torch.Tensor] = {}
    for n, m in modules.items():
        t[f"delta_s/{n}"] = m.delta_s.detach().float().cpu()
        t[f"delta_s_hack/{n}"] = m.delta_s_hack.detach().float().cpu()
        if m.quarantine is not None:
            t[f"A_q/{n}"] = m.quarantine.A_q.detach().float().cpu()
            t[f"B_q/{n}"] = m.quarantine.B_q.detach().float().cpu()
    path = snapshot_path(run_dir, step)
    integrity.save_safetensors(path, t, {"schema": SCHEMA, "step": str(step)})
    return path


def maybe_save(run_dir: Path, step: int, every: int, modules: dict[str, AntiPaSTOLinear], final: bool = False) -> None:
    """The loop's hook: step 0, every `every` steps and the final step (final=True); nothing when every=0."""
    if every and (final or step % every == 0) and not snapshot_path(run_dir, step).exists():
        save(run_dir, step, modules)


def load(path: Path) -> Snapshot:
    fix = "the snapshot is damaged: rerun the training run with trainer.snapshot_every set to rewrite it"
    meta, t = integrity.load_safetensors(path, "trainer.snapshot_every", fix)
    if meta.get("schema") != SCHEMA:
        raise SnapshotError(f"{path}: schema {meta.get('schema')!r}, expected {SCHEMA!r} (not a knob snapshot)")
    parts: dict[str, dict[str, torch.Tensor]] = {k: {} for k in KEYS}
    for key, v in t.items():
        kind, _, name = key.partition("/")
        if kind not in parts:
            raise SnapshotError(f"{path}: unknown tensor {key!r}; expected prefixes {KEYS}")
        parts[kind][name] = v
    if set(parts["delta_s"]) != set(parts["delta_s_hack"]) or not parts["delta_s"]:
        raise SnapshotError(f"{path}: delta_s and delta_s_hack must name the same non-empty module set")
    return Snapshot(int(meta["step"]), **parts)


def load_all(run_dir: Path) -> list[Snapshot]:
    """Every snapshot of a run, by step; fails when there is none or step 0 is missing."""
    d = Path(run_dir) / SNAPSHOT_DIR
    files = sorted(p for p in d.glob("*.safetensors") if _FILE.match(p.name)) if d.is_dir() else []
    if not files:
        raise SnapshotError(f"no knob snapshots in {d}; train with trainer.snapshot_every=N (N > 0) to write them")
    snaps = [load(p) for p in files]
    if snaps[0].step != 0:
        raise SnapshotError(f"{d}: the first snapshot is step {snaps[0].step}, expected step 0 (the initial knobs)")
    return snaps
