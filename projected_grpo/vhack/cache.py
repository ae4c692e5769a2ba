"""Load-or-extract: the v_hack a run uses (vhack.path, or the automatic cache under a file lock, extracted on a
miss), the random control applied, and the in-run re-extraction of a refresh."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from projected_grpo.config import VSource
from projected_grpo.vhack.basis import MICRO_BATCH, extract
from projected_grpo.vhack.controls import random_control
from projected_grpo.vhack.pairs import make_pairs
from projected_grpo.vhack.store import (
    CACHE_KEY,
    VHack,
    _enum_str,
    cache_path,
    extraction_meta,
    load_v_hack,
    save_v_hack,
    select,
)

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------
# Load-or-extract


def get_v_hack(cfg, model, tok, problems, cache_dir, micro_batch: int | None = MICRO_BATCH) -> VHack:
    """The v_hack for cfg.vhack on the (already wrapped) model: load vhack.path, or the automatic cache
    file under cache_dir/vhack/ (extracting and saving it on a miss, under a file lock)."""
    from filelock import FileLock

    v = cfg.vhack
    source = VSource(_enum_str(v.source))
    file_source = VSource.real if source == VSource.random else source  # random is derived from the real file
    pairs, _ = make_pairs(v, problems, file_source)
    meta = extraction_meta(cfg, model, pairs, file_source)
    if v.path is not None:
        path = Path(v.path).expanduser()
        if not path.exists():
            raise FileNotFoundError(
                f"vhack.path={str(path)!r} does not exist. Create it with `python -m projected_grpo.vhack extract "
                f"vhack.path={path} [same overrides]`, or set vhack.path=null to extract into the automatic cache"
            )
        expect = {key: meta[key] for key in ("model", "source", "modes", "base_hash")}
        vh = load_v_hack(path, model, int(v.k), float(v.drop_bottom_frac), expect)
        log.info("v_hack: loaded %s (vhack.path)", path)
    else:
        path = cache_path(Path(cache_dir), meta)
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock"):
            extracted = not path.exists()
            if extracted:
                extract_and_save(model, tok, pairs, v, meta, path, micro_batch)
        vh = load_v_hack(path, model, int(v.k), float(v.drop_bottom_frac), meta, CACHE_KEY)
        vh.extracted = extracted
        if not extracted:
            log.info("v_hack: loaded cached extraction %s", path)
    if source == VSource.random:
        vh = random_control(vh, int(v.seed))
        log.info("v_hack: random control (seed %d) with the real file's row counts", int(v.seed))
    return vh


def refreshed_v_hack(cfg, model, tok, problems) -> dict[str, torch.Tensor]:
    """Re-extract v_hack from the current model (the caller ablates the quarantine), same k slicing and floor."""
    v = cfg.vhack
    source = VSource(v.source)
    file_source = VSource.real if source == VSource.random else source
    pairs, _ = make_pairs(v, problems, file_source)
    V, S = extract(model, tok, pairs, int(v.extract_top_k), float(v.tau_axis))
    vh = select(V, S, int(v.k), float(v.drop_bottom_frac))
    if source == VSource.random:
        vh = random_control(vh, int(v.seed))
    dev = next(model.parameters()).device
    return {n: t.to(dev) for n, t in vh.v.items()}


def extract_and_save(model, tok, pairs, vcfg, meta, path, micro_batch=MICRO_BATCH) -> None:
    import time

    t0 = time.perf_counter()
    V, S = extract(model, tok, pairs, int(vcfg.extract_top_k), float(vcfg.tau_axis), micro_batch)
    save_v_hack(Path(path), V, S, meta)
    log.info(
        "v_hack: extracted %s from %d pairs (%d modules, top_k=%s) in %.1fs, saved %s",
        meta["source"], len(pairs), len(V), meta["top_k"], time.perf_counter() - t0, path,
    )  # fmt: skip
