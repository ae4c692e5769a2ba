"""Contrastive (prompt, hack, clean) pairs for v_hack extraction: chosen per source (real, shuffled = labels
swapped on a seeded half, nonhack = honest-vs-honest), and their content hash (part of the cache key)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import replace

import torch

from projected_grpo.config import VSource
from projected_grpo.modes import parse_modes
from projected_grpo.vhack.errors import VHackError

# ---------------------------------------------------------------------------------------------------
# Pairs


def pairs_hash(pairs: Sequence) -> str:
    """sha256 over the texts (prompt messages, both completions, mode, problem id) of every pair, in order."""
    h = hashlib.sha256()
    for p in pairs:
        rec = [
            p.prompt_messages,
            p.hack_completion,
            p.clean_completion,
            str(getattr(p.mode, "value", p.mode)),
            p.problem_id,
        ]
        h.update(json.dumps(rec, sort_keys=True).encode())
        h.update(b"\0")
    return h.hexdigest()[:32]


def swap_half(pairs: Sequence, seed: int) -> list:
    """The shuffled control: hack/clean labels swapped on a seeded random half (floor(n/2)) of the pairs."""
    g = torch.Generator().manual_seed(seed)
    swap = set(torch.randperm(len(pairs), generator=g)[: len(pairs) // 2].tolist())
    return [
        replace(p, hack_completion=p.clean_completion, clean_completion=p.hack_completion) if i in swap else p
        for i, p in enumerate(pairs)
    ]


def make_pairs(vcfg, problems, source: VSource | str | None = None) -> tuple[list, list]:
    """(extraction pairs, held-out pairs) for `source` (default vcfg.source): train-split problems x vcfg.modes,
    the first vcfg.n_pairs + vcfg.n_heldout of them (n_pairs=0: all).

    The LAST vcfg.n_heldout hack-vs-clean pairs are held out (always real pairs, so every control is validated
    against the same real hack direction). real/random: the rest; shuffled: the rest with labels swapped on a
    seeded half; nonhack: honest-vs-honest pairs of the same (problem, mode)s, also minus the last n_heldout."""
    from projected_grpo.env.completions import contrastive_pairs

    source = VSource(source if source is not None else vcfg.source)
    modes = parse_modes(vcfg.modes)
    problems = [p for p in problems if p.split == "train"]  # held-out problems never shape V
    n_held, n_pairs = int(vcfg.n_heldout), int(vcfg.n_pairs)
    real = [p for p in contrastive_pairs(problems, modes, "hack", vcfg.exploit_form) if p.mode in modes]
    if n_pairs:
        real = real[: n_pairs + n_held]
    if len(real) <= n_held:
        raise VHackError(
            f"v_hack needs more pairs than vhack.n_heldout={n_held}; found {len(real)} pairs for "
            f"{len(problems)} problems x modes {[m.value for m in modes]}. Lower vhack.n_heldout or add problems."
        )
    train, heldout = real[: len(real) - n_held], real[len(real) - n_held :]
    if source == VSource.shuffled:
        train = swap_half(train, int(vcfg.seed))
    elif source == VSource.nonhack:
        nonhack = [p for p in contrastive_pairs(problems, modes, kind="nonhack") if p.mode in modes]
        train = nonhack[: len(train)]
    return train, heldout
