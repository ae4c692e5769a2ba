"""Checkpoints that hold only data: one safetensors file per run dir, nothing in it can run code on load.

checkpoint.safetensors: every tensor of the train state (knobs, AdamW moments, RNG states, v_hack, route2's
quarantine) under a path-like name (e.g. ``knobs/<module>/0``), and in the metadata the rest of the state as
JSON (`state`: step, scheduler, Python RNG, deploy evals, config fingerprint, with {"__tensor__": name} where a
tensor sits), plus `format` and the content checksum (integrity.py). Loading parses JSON and safetensors only,
verifies the checksum, refuses non-finite values, and compares the config fingerprint; all of that happens in
``preflight`` before the run writes anything into its run dir, so a refused resume leaves the dir untouched.

The old format (checkpoint.pt, a pickle) is never unpickled by a run: it is refused with the conversion
command, which reads it with torch.load(weights_only=True) (tensors and plain containers only, no code runs):

    python -m projected_grpo.checkpoint convert RUN_DIR/checkpoint.pt
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from projected_grpo.integrity import IntegrityError, finite_json, load_safetensors, save_safetensors, where

CKPT_NAME = "checkpoint.safetensors"
LEGACY_NAME = "checkpoint.pt"  # the pickle format before checkpoint.safetensors
FORMAT = "projected_grpo.checkpoint/1"
KEY = "hydra.run.dir (with trainer.resume)"  # the config keys that choose the checkpoint a run reads
FIX = (
    "Start the run in a fresh run directory (another hydra.run.dir), or restore the run dir's checkpoint "
    "from a copy you trust."
)


class CheckpointError(IntegrityError):
    """A checkpoint the run refuses to resume from; the message names the file, what is wrong and the fix."""


# ---------------------------------------------------------------------------------------------------
# A state tree <-> (JSON skeleton, name -> tensor)


def flatten(obj, name: str, tensors: dict[str, torch.Tensor]):
    """JSON-able skeleton of `obj`; tensors go to `tensors` under path-like names. Tuples and dicts with
    non-str keys are tagged so that they come back as they were."""
    if isinstance(obj, torch.Tensor):
        tensors[name] = obj.detach().cpu().clone()  # own storage: safetensors refuses shared memory
        return {"__tensor__": name}
    sub = lambda k: f"{name}/{k}" if name else str(k)
    if isinstance(obj, tuple):
        return {"__tuple__": [flatten(x, sub(i), tensors) for i, x in enumerate(obj)]}
    if isinstance(obj, list):
        return [flatten(x, sub(i), tensors) for i, x in enumerate(obj)]
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj) and not any(k.startswith("__") for k in obj):
            return {k: flatten(v, sub(k), tensors) for k, v in obj.items()}
        return {"__items__": [[k, flatten(v, sub(k), tensors)] for k, v in obj.items()]}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"checkpoint state field {name} holds a {type(obj).__name__}; only tensors and JSON values fit")


def unflatten(obj, tensors: dict[str, torch.Tensor], path, field: str = ""):
    if isinstance(obj, list):
        return [unflatten(x, tensors, path, f"{field}[{i}]") for i, x in enumerate(obj)]
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            if obj["__tensor__"] not in tensors:
                raise CheckpointError(f"{where(path, KEY)}: field {field} names a missing tensor. {FIX}")
            return tensors[obj["__tensor__"]]
        if set(obj) == {"__tuple__"}:
            return tuple(unflatten(x, tensors, path, field) for x in obj["__tuple__"])
        if set(obj) == {"__items__"}:
            return {k: unflatten(v, tensors, path, f"{field}/{k}") for k, v in obj["__items__"]}
        return {k: unflatten(v, tensors, path, f"{field}/{k}") for k, v in obj.items()}
    return obj


# ---------------------------------------------------------------------------------------------------
# Save / load


def config_fingerprint(cfg: DictConfig) -> str:
    """The resolved config minus what may change on resume (trainer.resume, trainer.steps, logger, and
    trainer.folded_forward and trainer.shared_prompt_backward: training paths with the same gradients to float
    rounding)."""
    c = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    c["trainer"].pop("resume", None)
    c["trainer"].pop("steps", None)
    c["trainer"].pop("folded_forward", None)
    c["trainer"].pop("shared_prompt_backward", None)
    c.pop("logger", None)
    return json.dumps(c, sort_keys=True)


def save(path: Path, state: dict) -> None:
    """Atomic write of `state` (a tree of tensors and JSON values) with its content checksum."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = flatten(state, "", tensors)
    save_safetensors(path, tensors, {"format": FORMAT, "state": json.dumps(skeleton)})


def load(path: Path) -> dict:
    """The state tree of a file written by ``save``: checksum verified, non-finite values refused."""
    try:
        meta, tensors = load_safetensors(path, KEY, FIX)
    except CheckpointError:
        raise
    except IntegrityError as e:
        raise CheckpointError(str(e)) from e
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{where(path, KEY)}: format {meta.get('format')!r}, expected {FORMAT!r}. {FIX}")
    if "state" not in meta:
        raise CheckpointError(f"{where(path, KEY)}: no `state` entry in the metadata. {FIX}")
    skeleton = json.loads(meta["state"])
    try:
        finite_json(skeleton, path, KEY, FIX)
    except IntegrityError as e:
        raise CheckpointError(str(e)) from e
    return unflatten(skeleton, tensors, path)


def preflight(cfg: DictConfig, run_dir: Path) -> dict | None:
    """The checkpoint state this run resumes from (None: a fresh run), fully validated; writes nothing.

    Raises CheckpointError (the run is refused) for: trainer.resume without a checkpoint, a legacy pickle
    checkpoint, an unreadable/corrupted/non-finite one, or one written by a different config."""
    path, legacy = Path(run_dir) / CKPT_NAME, Path(run_dir) / LEGACY_NAME
    if legacy.exists() and not path.exists():
        raise CheckpointError(
            f"{where(legacy, KEY)} is a checkpoint in the old pickle format, which this version never loads "
            f"(unpickling can run code). Convert it with `python -m projected_grpo.checkpoint convert {legacy}` "
            f"(reads it with torch.load(weights_only=True), which runs no code; only for a file you trust), "
            f"or start a fresh run dir."
        )
    if not path.exists():
        if cfg.trainer.resume:
            raise CheckpointError(
                f"trainer.resume=true but there is no {CKPT_NAME} in {run_dir}; point hydra.run.dir at the run "
                f"directory to resume, or drop trainer.resume"
            )
        return None
    state = load(path)
    if state.get("config") != config_fingerprint(cfg):
        raise CheckpointError(
            f"checkpoint {path} was written by a different config; refusing to resume over it (nothing in "
            f"{run_dir} was changed). Use a fresh run directory, or restore the original overrides (see "
            f"{Path(run_dir) / '.hydra' / 'overrides.yaml'})."
        )
    return state


def convert(legacy: Path) -> Path:
    """checkpoint.pt (pickle) -> checkpoint.safetensors beside it, read with weights_only=True (no code runs)."""
    legacy = Path(legacy)
    try:
        state = torch.load(legacy, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError for anything beyond tensors and plain containers
        raise CheckpointError(
            f"{legacy} cannot be read as data only ({type(e).__name__}: {e}); it holds objects beyond tensors and "
            f"plain containers. Do not load it; start a fresh run dir."
        ) from e
    out = legacy.with_name(CKPT_NAME)
    save(out, state)
    load(out)  # read back: finite and checksummed
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 2 or argv[0] != "convert":
        print("usage: python -m projected_grpo.checkpoint convert RUN_DIR/checkpoint.pt", file=sys.stderr)
        return 2
    out = convert(Path(argv[1]))
    print(f"wrote {out}; the old {argv[1]} is left in place (delete it once the resume works)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
