"""v_hack files: schema v3 (safetensors: V [k_max, r] under module names, S under _sv/), metadata and cache key,
the loader that validates a file against the model and config, and the selection (top-k slicing + one global
noise floor)."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from projected_grpo.adapter import adapter_modules, weight_key
from projected_grpo.config import VSource
from projected_grpo.integrity import load_safetensors, save_safetensors
from projected_grpo.modes import parse_modes
from projected_grpo.vhack.errors import VHackError
from projected_grpo.vhack.pairs import pairs_hash

log = logging.getLogger(__name__)

SCHEMA = "v3_checksum"
SV = "_sv/"  # key prefix of the singular values


# ---------------------------------------------------------------------------------------------------
# Metadata, hashing, files


def model_id(model_cfg) -> str:
    return f"{model_cfg.name}|{model_cfg.hub_id or 'embedded'}"


def model_dtype(model) -> str:
    mods = adapter_modules(model)
    w = next(iter(mods.values())).weight if mods else next(model.parameters())
    return str(w.dtype).removeprefix("torch.")


def base_hash(model) -> str:
    """sha256 over (name, weight_key(W)) of every wrapped module in sorted name order."""
    h = hashlib.sha256()
    for name, m in sorted(adapter_modules(model).items()):
        if m.folded:
            raise VHackError(f"module {name} is folded; hash the base weights outside adapter.folded()")
        h.update(f"{name}={weight_key(m.weight)};".encode())
    return h.hexdigest()[:32]


def _enum_str(x) -> str:
    return str(getattr(x, "value", x))


def extraction_meta(cfg, model, pairs, source: VSource | str, base: str | None = None) -> dict[str, str]:
    """The metadata (and cache key) of an extraction of `pairs` under cfg on `model`."""
    v = cfg.vhack
    return {
        "schema": SCHEMA,
        "model": model_id(cfg.model),
        "dtype": model_dtype(model),
        "top_k": str(int(v.extract_top_k)),
        "tau_axis": repr(float(v.tau_axis)),
        "source": _enum_str(source),
        "modes": ",".join(m.value for m in parse_modes(v.modes)),
        "pairs_hash": pairs_hash(pairs),
        "n_pairs": str(len(pairs)),
        # only shuffled's pairs depend on the seed (and pairs_hash already tells them apart); real/nonhack files are
        # shared by every training seed (vhack.seed follows trainer.seed), the random control is derived at load time
        "seed": str(int(v.seed)) if _enum_str(source) == VSource.shuffled.value else "-",
        "base_hash": base or base_hash(model),
    }


KEY_FIELDS = ("model", "dtype", "top_k", "tau_axis", "source", "modes", "pairs_hash", "seed", "base_hash")


def cache_path(cache_dir: Path, meta: dict[str, str]) -> Path:
    fields = {"schema": SCHEMA, **{k: meta[k] for k in KEY_FIELDS}}  # a new schema never finds an old file
    key = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]
    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in meta["model"])
    return Path(cache_dir) / "vhack" / f"{slug}-{meta['source']}-{key}.safetensors"


def save_v_hack(path: Path, V: dict, S: dict, meta: dict[str, str]) -> None:
    """Atomic write of schema v2: V under bare names, S under _sv/{name}; k_max added to the metadata."""
    k_max = {t.shape[0] for t in V.values()}
    if len(k_max) != 1:
        raise VHackError(f"every module must have the same k_max rows; found {sorted(k_max)}")
    tensors = {**{n: v.float().cpu() for n, v in V.items()}, **{SV + n: s.float().cpu() for n, s in S.items()}}
    save_safetensors(Path(path), tensors, {**meta, "schema": SCHEMA, "k_max": str(k_max.pop())})


PATH_KEY = "vhack.path"
CACHE_KEY = "vhack.path=null: the automatic cache under paths.cache_dir"


def fix_for(path, key: str) -> str:
    """What to do about a refused v_hack file, by the config key that chose it."""
    if key == CACHE_KEY:
        return f"Delete it (rm {path}); the next run re-extracts it."
    return f"Re-extract it: `python -m projected_grpo.vhack extract vhack.path={path} [the run's overrides]`."


def read_v_hack(path: Path, key: str = PATH_KEY) -> tuple[dict[str, str], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """-> (metadata, V name -> [k_max, r], S name -> [k_max]): the checksum verified and every value finite
    (integrity.IntegrityError naming the file, `key` and the module otherwise); no validation against a model."""
    meta, t = load_safetensors(path, key, fix_for(path, key))
    S = {k[len(SV) :]: v for k, v in t.items() if k.startswith(SV)}
    V = {k: v for k, v in t.items() if not k.startswith(SV)}
    return meta, V, S


# ---------------------------------------------------------------------------------------------------
# Selection (slicing + global noise floor) and loading


@dataclass
class VHack:
    """A loaded v_hack: name -> V [k_i, r] float32 on the model's device, plus how it was selected."""

    v: dict[str, torch.Tensor]
    threshold: float  # the global S noise floor (rows with S < threshold were dropped)
    kept_axes: int  # rows kept after the floor
    total_axes: int  # nonzero rows after slicing to k, before the floor
    dropped_modules: list[str] = field(default_factory=list)  # modules left with no rows
    path: Path | None = None
    extracted: bool = False  # True when this call extracted (cache miss), False when it loaded a file
    source: str = "real"
    meta: dict[str, str] = field(default_factory=dict)

    @property
    def k_per_module(self) -> dict[str, int]:
        return {n: int(v.shape[0]) for n, v in self.v.items()}


def select(V: dict[str, torch.Tensor], S: dict[str, torch.Tensor], k: int, drop_bottom_frac: float) -> VHack:
    """Top k rows per module, minus zeroed (tau_axis) rows, minus rows with S below the global floor
    quantile(all kept S, drop_bottom_frac) (torch.quantile, linear). drop_bottom_frac=0 keeps everything."""
    k_max = min(int(v.shape[0]) for v in V.values())
    if k > k_max:
        raise VHackError(
            f"vhack.k={k} but the v_hack file holds only k_max={k_max} axes per module; re-extract with "
            f"vhack.extract_top_k>={k} (and at least {k} extraction pairs), or lower vhack.k"
        )
    kept = {}
    for n in sorted(V):
        rows = V[n][:k].float()  # [k, r]
        nonzero = rows.abs().sum(1) > 0  # tau_axis-zeroed rows are all-zero
        kept[n] = (rows[nonzero], S[n][:k].float()[nonzero])
    all_s = torch.cat([s for _, s in kept.values()])  # [total]
    if all_s.numel() == 0:
        raise VHackError("every v_hack axis was zeroed by vhack.tau_axis; lower tau_axis and re-extract")
    threshold = float(torch.quantile(all_s, drop_bottom_frac, interpolation="linear"))
    v, dropped = {}, []
    for n, (rows, s) in kept.items():
        keep = s >= threshold
        if keep.any():
            v[n] = rows[keep].contiguous()
        else:
            dropped.append(n)
    out = VHack(v, threshold, sum(t.shape[0] for t in v.values()), int(all_s.numel()), dropped)
    log.info(
        "v_hack select: k=%d drop_bottom_frac=%.3g threshold=%.4g, axes kept %d/%d, modules kept %d dropped %d%s",
        k, drop_bottom_frac, threshold, out.kept_axes, out.total_axes, len(v), len(dropped),
        f" ({', '.join(dropped)})" if dropped else "",
    )  # fmt: skip
    return out


def _mismatch(path, what: str, found, expected) -> VHackError:
    return VHackError(
        f"v_hack file {path} does not match: {what} found {found!r}, expected {expected!r}. Never reuse a v_hack "
        f"from another model/config: re-extract (delete the file, or set vhack.path=null to use the automatic "
        f"cache, or run `python -m projected_grpo.vhack extract [overrides]`)"
    )


def validate_file(path, meta, V, S, model, expect: dict | None = None) -> None:
    """Schema, expected metadata (model first), dtype, module set/shapes and base-weight hash vs the model."""
    if meta.get("schema") != SCHEMA:
        raise _mismatch(path, "schema", meta.get("schema"), SCHEMA)
    expect = dict(expect or {})
    for key in ["model"] + sorted(set(expect) - {"model", "base_hash", "dtype"}):
        if key in expect and meta.get(key) != expect[key]:
            raise _mismatch(path, key, meta.get(key), expect[key])
    if meta.get("dtype") != model_dtype(model):
        raise _mismatch(path, "dtype", meta.get("dtype"), model_dtype(model))
    mods = adapter_modules(model)
    if set(V) != set(mods) or set(S) != set(V):
        missing, extra = sorted(set(mods) - set(V)), sorted(set(V) - set(mods))
        raise _mismatch(path, "module set", f"{len(V)} modules (not in the model: {extra[:3]}...)",
                        f"the model's {len(mods)} wrapped modules (not in the file: {missing[:3]}...)")  # fmt: skip
    for n, m in mods.items():
        if V[n].ndim != 2 or V[n].shape[1] != m.r or S[n].shape != V[n].shape[:1]:
            raise _mismatch(path, f"shape of {n}", (tuple(V[n].shape), tuple(S[n].shape)), f"[k_max, {m.r}], [k_max]")
    base = expect.get("base_hash") or base_hash(model)
    if meta.get("base_hash") != base:
        raise _mismatch(path, "base_hash (base weights)", meta.get("base_hash"), base)


def load_v_hack(path, model, k: int, drop_bottom_frac: float, expect: dict | None = None, key: str = PATH_KEY) -> VHack:
    """Validate the file (integrity, then against the model and `expect`ed metadata), then ``select`` -> VHack
    on the model's device. `key`: the config key that chose the file, for error messages."""
    path = Path(path)
    meta, V, S = read_v_hack(path, key)
    validate_file(path, meta, V, S, model, expect)
    vh = select(V, S, k, drop_bottom_frac)
    dev = next(model.parameters()).device
    vh.v = {n: v.to(dev) for n, v in vh.v.items()}
    vh.path, vh.meta, vh.source = path, meta, meta["source"]
    return vh
