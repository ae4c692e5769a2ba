"""Integrity of every file the project reads back (v_hack files, checkpoints, the SVD cache, the teacher pool).

Each such file carries a content checksum in its metadata, computed at save and verified at load, and loading
refuses non-finite values. Every error names the file, the config key that chose it, the module/field at fault
and the fix. Safetensors files: ``save_safetensors`` / ``load_safetensors`` (checksum over every tensor's name,
dtype, shape and bytes plus every other metadata entry); JSON files: ``json_checksum`` over the canonical dump.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from pathlib import Path

import torch

from projected_grpo.atomic import atomic_path

CHECKSUM = "checksum"  # the metadata key that holds the checksum, in every file kind


class IntegrityError(ValueError):
    """A file that cannot be parsed, does not match its checksum, or holds non-finite values."""


def where(path, key: str) -> str:
    """`path (chosen by key)`: the prefix of every integrity error."""
    return f"{path} (chosen by {key})"


def tensors_checksum(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, str]) -> str:
    """sha256 over every tensor (name, dtype, shape, bytes) and every metadata entry but the checksum, sorted."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        h.update(f"T|{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    for k in sorted(set(meta) - {CHECKSUM}):
        h.update(f"M|{k}|{meta[k]}|".encode())
    return "sha256:" + h.hexdigest()


def json_checksum(obj) -> str:
    """sha256 over the canonical JSON dump of `obj` (sorted keys, no spaces)."""
    return "sha256:" + hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def verify(stored: str | None, actual: str, path, key: str, fix: str) -> None:
    if stored is None:
        raise IntegrityError(
            f"{where(path, key)} has no content checksum (written by an older version, or not by this project). "
            f"Refusing to read it; {fix}"
        )
    if stored != actual:
        raise IntegrityError(
            f"{where(path, key)} does not match its content checksum (stored {stored[:23]}..., content "
            f"{actual[:23]}...): the file was corrupted or edited after it was written. {fix}"
        )


def check_finite(tensors: Mapping[str, torch.Tensor], path, key: str, fix: str) -> None:
    """Refuse NaN/inf in any floating tensor; the error names the tensor (module/field)."""
    for name in sorted(tensors):
        t = tensors[name]
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            n_bad = int((~torch.isfinite(t)).sum())
            raise IntegrityError(
                f"{where(path, key)}: {n_bad} non-finite value(s) in {name} (shape {tuple(t.shape)}). {fix}"
            )


def finite_json(obj, path, key: str, fix: str, field: str = "") -> None:
    """Refuse NaN/inf floats anywhere in a parsed JSON value; the error names the field."""
    if isinstance(obj, float) and not math.isfinite(obj):
        raise IntegrityError(f"{where(path, key)}: non-finite value {obj} in field {field or '<root>'}. {fix}")
    if isinstance(obj, dict):
        for k, v in obj.items():
            finite_json(v, path, key, fix, f"{field}/{k}" if field else str(k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            finite_json(v, path, key, fix, f"{field}[{i}]")


def save_safetensors(path, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, str]) -> None:
    """Atomic safetensors write with the content checksum added to the metadata."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    meta = {**meta, CHECKSUM: tensors_checksum(tensors, meta)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def load_safetensors(path, key: str, fix: str) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """-> (metadata, tensors) of a file written by ``save_safetensors``: parsed, checksum verified, all finite.
    `key` is the config key that chose the file, `fix` what the user should do when it is refused."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            meta = dict(f.metadata() or {})
            # .clone(): safetensors hands out tensors at the file's data offsets (8-byte aligned only, shifting with
            # the header length); MKL's gemv rounds differently on such buffers than on the allocator's 64-byte
            # aligned ones, so a resumed run drifted from an uninterrupted one in the last bits (cin at 1e-8)
            tensors = {k: f.get_tensor(k).clone() for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    except Exception as e:  # SafetensorError, OSError, ...: the library's message names neither file nor key
        raise IntegrityError(
            f"{where(path, key)} is not a readable safetensors file ({type(e).__name__}: {e}); it is truncated, "
            f"corrupted or of another format. {fix}"
        ) from e
    verify(meta.get(CHECKSUM), tensors_checksum(tensors, meta), path, key, fix)
    check_finite(tensors, path, key, fix)
    return meta, tensors


def load_json(path: Path, key: str, fix: str) -> dict:
    """A JSON object written with ``json_checksum`` of its other fields under CHECKSUM: parsed, verified, finite."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise IntegrityError(f"{where(path, key)} is not readable JSON ({type(e).__name__}: {e}). {fix}") from e
    if not isinstance(data, dict):
        raise IntegrityError(f"{where(path, key)} holds a JSON {type(data).__name__}, expected an object. {fix}")
    body = {k: v for k, v in data.items() if k != CHECKSUM}
    verify(data.get(CHECKSUM), json_checksum(body), path, key, fix)
    finite_json(body, path, key, fix)
    return body


def with_checksum(body: dict) -> dict:
    """`body` plus its json_checksum under CHECKSUM (for ``load_json``)."""
    if CHECKSUM in body:
        raise ValueError(f"a JSON body must not hold the reserved key {CHECKSUM!r}")
    return {**body, CHECKSUM: json_checksum(body)}
