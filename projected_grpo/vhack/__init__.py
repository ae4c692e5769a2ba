"""v_hack: the hack direction of every adapter module's δS, extracted from contrastive (hack, clean) pairs.

Per completion c the δS gradient of its mean completion-token NLL, g_c = ∇_δS NLL(c) [r], is taken for every
wrapped module from ONE batched backward (``pergrad.grouped_grads``; or a few fixed-size micro-batches).
Per module  D = G_hack − G_clean  [n_pairs, r];  SVD D = U diag(S) Vh;  v_hack = the top rows of Vh, each
oriented hack-ward by a majority vote over the pairs of the signs of D Vᵀ (so c = V g > 0 means that descending
g lowers the hack's NLL relative to the clean one's). Rows with S_i/S_0 < tau_axis are zeroed.

File schema v3 (safetensors): bare module-name keys hold V [k_max, r], ``_sv/{name}`` keys hold S [k_max];
metadata: schema, model, dtype, top_k, k_max, tau_axis, source, modes, pairs_hash, base_hash, n_pairs, seed, and
the content checksum (integrity.py: verified at load, non-finite values refused; v2 files had no checksum).

Loading slices to the top k rows and applies ONE global noise floor: the `drop_bottom_frac` quantile of every
kept S_i across all modules; rows below it are dropped, modules left empty are removed (``select``).

Controls (vhack.source): real | shuffled (hack/clean swapped on a seeded half of the pairs) | nonhack
(honest-vs-honest pairs) are extracted and cached like real; random is derived at load time from the REAL
file: per module a seeded random orthonormal basis with exactly the real row count after slicing and floor.
NB shuffled: swapping a pair negates its row of D, and DᵀD is unchanged, so shuffled spans the SAME subspace
(same S) as real; only the majority-vote orientation of each axis is randomised. It is a control for the
orientation (one-sided gate), not for the subspace; no_gate projection cannot tell it from real.

Modules: pairs (contrastive pairs), basis (gradients -> SVD -> oriented basis), store (file schema, cache key,
load + validate, selection), controls (random control, held-out check), cache (load-or-extract, refresh),
__main__ (CLI: python -m projected_grpo.vhack extract | inspect PATH). The names below are the public API.
"""

from projected_grpo.vhack.basis import (
    MICRO_BATCH,
    examples,
    extract,
    hack_basis,
    majority_sign,
    per_completion_grads,
    per_completion_grads_loop,
)
from projected_grpo.vhack.cache import extract_and_save, get_v_hack, refreshed_v_hack
from projected_grpo.vhack.controls import heldout_report, random_control, random_orthonormal
from projected_grpo.vhack.errors import VHackError
from projected_grpo.vhack.pairs import make_pairs, pairs_hash, swap_half
from projected_grpo.vhack.store import (
    CACHE_KEY,
    KEY_FIELDS,
    PATH_KEY,
    SCHEMA,
    SV,
    VHack,
    base_hash,
    cache_path,
    extraction_meta,
    load_v_hack,
    model_dtype,
    model_id,
    read_v_hack,
    save_v_hack,
    select,
    validate_file,
)

__all__ = [
    "CACHE_KEY", "KEY_FIELDS", "MICRO_BATCH", "PATH_KEY", "SCHEMA", "SV", "VHack", "VHackError", "base_hash",
    "cache_path", "examples", "extract", "extract_and_save", "extraction_meta", "get_v_hack", "hack_basis", "heldout_report",
    "load_v_hack", "majority_sign", "make_pairs", "model_dtype", "model_id", "pairs_hash", "per_completion_grads",
    "per_completion_grads_loop", "random_control", "random_orthonormal", "read_v_hack", "refreshed_v_hack",
    "save_v_hack", "select", "swap_half", "validate_file",
]  # fmt: skip
