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

CLI:  python -m projected_grpo.vhack extract [hydra overrides...]
      python -m projected_grpo.vhack inspect PATH [hydra overrides...]
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from projected_grpo.adapter import adapter_modules, weight_key
from projected_grpo.config import VSource
from projected_grpo.integrity import load_safetensors, save_safetensors
from projected_grpo.modes import parse_modes
from projected_grpo.pergrad import grouped_grads
from projected_grpo.tokens import completion_nll, encode_completion, encode_prompt, pack

log = logging.getLogger(__name__)

SCHEMA = "v3_checksum"
SV = "_sv/"  # key prefix of the singular values
MICRO_BATCH = 8  # completions per forward/backward (length-sorted) in get_v_hack: bounds activation memory
# on big models (~4 GB per 500-token completion on Qwen3-4B) and limits padding


class VHackError(ValueError):
    """A v_hack file that does not fit the model/config, or a failed extraction; says how to fix it."""


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
    real = [p for p in contrastive_pairs(problems, modes, kind="hack") if p.mode in modes]
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


# ---------------------------------------------------------------------------------------------------
# Per-completion δS gradients


def _examples(tok, pairs) -> tuple[list[list[int]], list[list[int]], list[str]]:
    """Rows 2i (hack) and 2i+1 (clean) of pair i: prompt ids, completion ids, a label for error messages."""
    prompts, comps, labels = [], [], []
    for p in pairs:
        pid = encode_prompt(tok, p.prompt_messages)
        mode = getattr(p.mode, "value", p.mode)
        for side, text in (("hack", p.hack_completion), ("clean", p.clean_completion)):
            prompts.append(pid)
            comps.append(encode_completion(tok, text))
            labels.append(f"pair (problem_id={p.problem_id!r}, mode={mode!r}) {side} completion")
    return prompts, comps, labels


class _GradMode:
    """Eval mode + delta_s requiring grad for the duration; restores train flag and requires_grad on exit."""

    def __init__(self, model):
        self.model, self.mods = model, adapter_modules(model)

    def __enter__(self):
        if not self.mods:
            raise VHackError("the model has no AntiPaSTO modules; wrap it first (adapter.wrap_model)")
        self.training = self.model.training
        self.req = {n: m.delta_s.requires_grad for n, m in self.mods.items()}
        self.model.eval()
        for m in self.mods.values():
            m.delta_s.requires_grad_(True)
        return self

    def __exit__(self, *exc):
        for n, m in self.mods.items():
            m.delta_s.requires_grad_(self.req[n])
        self.model.train(self.training)


def _check_finite(t: torch.Tensor, labels: list[str], what: str) -> None:
    bad = ~torch.isfinite(t.reshape(t.shape[0], -1)).all(1)  # [B]
    if bad.any():
        b = int(bad.nonzero()[0])
        raise VHackError(
            f"non-finite {what} for the {labels[b]} during v_hack extraction; check the model weights/dtype "
            f"(float16 overflows easily: try model.dtype=bfloat16 or float32) and that completion's text"
        )


def _batch_grads(model, mods, prompts, comps, labels, pad_id) -> dict[str, torch.Tensor]:
    """One forward/backward over a batch: name -> [B, r] δS gradients of each row's mean completion NLL."""
    dev = next(model.parameters()).device
    ids, attn, cmask = (t.to(dev) for t in pack(prompts, comps, pad_id))
    with grouped_grads(model, batch=len(prompts)) as store:
        nll = completion_nll(model, ids, attn, cmask)  # [B]
        _check_finite(nll.detach(), labels, "completion NLL")
        # autograd.grad (not .backward): the model's .grad fields are never touched
        torch.autograd.grad(nll.sum(), [m.delta_s for m in mods.values()])
    grads = {n: store.grads[n].detach() for n in mods}
    for n, g in grads.items():
        _check_finite(g, labels, f"delta_s gradient in module {n}")
    return grads


def per_completion_grads(model, tok, pairs, micro_batch: int | None = MICRO_BATCH) -> dict[str, torch.Tensor]:
    """name -> G [2 n_pairs, r] float32 (rows 2i hack, 2i+1 clean), batched (micro_batch rows at a time,
    sorted by length to limit padding; None = all completions in one forward/backward)."""
    prompts, comps, labels = _examples(tok, pairs)
    B = len(prompts)
    order = sorted(range(B), key=lambda b: (len(prompts[b]), len(comps[b])))
    mb = B if not micro_batch else micro_batch
    with _GradMode(model) as gm:
        parts: dict[str, list[torch.Tensor]] = {n: [] for n in gm.mods}
        for s in range(0, B, mb):
            idx = order[s : s + mb]
            g = _batch_grads(model, gm.mods, [prompts[i] for i in idx], [comps[i] for i in idx],
                             [labels[i] for i in idx], tok.pad_token_id)  # fmt: skip
            for n, part in parts.items():
                part.append(g[n])
    inv = torch.empty(B, dtype=torch.long)
    inv[torch.tensor(order)] = torch.arange(B)
    return {n: torch.cat(p)[inv.to(p[0].device)] for n, p in parts.items()}  # back to pair order


def per_completion_grads_loop(model, tok, pairs) -> dict[str, torch.Tensor]:
    """Reference: the same G [2 n_pairs, r] with one forward/backward per completion."""
    prompts, comps, labels = _examples(tok, pairs)
    with _GradMode(model) as gm:
        rows = [
            _batch_grads(model, gm.mods, [p], [c], [lab], tok.pad_token_id) for p, c, lab in zip(prompts, comps, labels)
        ]
    return {n: torch.cat([g[n] for g in rows]) for n in gm.mods}


# ---------------------------------------------------------------------------------------------------
# Extraction


def majority_sign(P: torch.Tensor) -> torch.Tensor:
    """P [n, k] projections -> [k] ±1: the sign most pairs agree on (ties: the sign of the sum, then +1)."""
    vote = (P > 0).sum(0) - (P < 0).sum(0)  # [k]
    tie = torch.where(P.sum(0) < 0, -1.0, 1.0).to(P.dtype)
    return torch.where(vote > 0, 1.0, torch.where(vote < 0, -1.0, tie)).to(P.dtype)


def hack_basis(D: torch.Tensor, top_k: int, tau_axis: float) -> tuple[torch.Tensor, torch.Tensor]:
    """D [n, r] -> (V [k_max, r] oriented hack-ward, S [k_max]) float32 on cpu; k_max = min(top_k, n, r).
    Rows with S_i/S_0 < tau_axis are zeroed (S is kept)."""
    n, r = D.shape
    k_max = min(top_k, n, r)
    _, S, Vh = torch.linalg.svd(D.detach().cpu().double(), full_matrices=False)
    V, S = Vh[:k_max], S[:k_max]  # [k_max, r], [k_max]
    V = V * majority_sign(D.detach().cpu().double() @ V.T)[:, None]
    keep = S / S[0] >= tau_axis if S[0] > 0 else torch.zeros_like(S, dtype=torch.bool)
    V[~keep] = 0.0
    return V.float().contiguous(), S.float().contiguous()


def extract(model, tok, pairs, top_k: int, tau_axis: float, micro_batch: int | None = MICRO_BATCH, grads=None):
    """-> (V: name -> [k_max, r], S: name -> [k_max]) float32 cpu. Leaves every .grad as it was (None stays
    None) and restores train/eval mode. `grads` may pass precomputed per_completion_grads."""
    if not pairs:
        raise VHackError("v_hack extraction got no pairs; check vhack.modes and the problem set")
    G = grads if grads is not None else per_completion_grads(model, tok, pairs, micro_batch)
    V, S = {}, {}
    for name, g in G.items():
        D = g[0::2] - g[1::2]  # [n_pairs, r]  hack − clean
        V[name], S[name] = hack_basis(D, top_k, tau_axis)
    return V, S


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


# ---------------------------------------------------------------------------------------------------
# Random control


def random_orthonormal(k: int, r: int, seed: int, name: str) -> torch.Tensor:
    """[k, r] orthonormal rows: QR of a Gaussian seeded by (seed, module name), independent of module order."""
    s = int(hashlib.sha256(f"{seed}|{name}".encode()).hexdigest()[:15], 16)
    g = torch.randn(r, k, generator=torch.Generator().manual_seed(s), dtype=torch.float64)  # [r, k]
    Q, _ = torch.linalg.qr(g)  # [r, k]
    return Q.T.float().contiguous()


def random_control(vh: VHack, seed: int) -> VHack:
    """The random control: same modules and row counts as `vh`, random orthonormal rows."""
    v = {n: random_orthonormal(t.shape[0], t.shape[1], seed, n).to(t.device) for n, t in vh.v.items()}
    return replace(vh, v=v, source=VSource.random.value)


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


# ---------------------------------------------------------------------------------------------------
# Validation on held-out pairs


def heldout_report(vh: VHack, G: dict[str, torch.Tensor], seed: int = 0, n_random: int = 8) -> dict:
    """G: name -> [2n, r] held-out per-completion grads. Mean over pairs of cin(v, hack − clean), next to the
    analytic random-basis null E≈sqrt(k/(2r)) (relu), sqrt(k/r) (no relu) and an empirical random-V cin."""
    from projected_grpo.projection import cin, cin_null

    n = next(iter(G.values())).shape[0] // 2
    D = [{name: (G[name][2 * i] - G[name][2 * i + 1]).to(t) for name, t in vh.v.items()} for i in range(n)]
    rand = [random_control(vh, seed + 1000 + j).v for j in range(n_random)]

    def mean(xs):
        return sum(xs) / max(len(xs), 1)

    null = mean([cin_null(vh.v, d) for d in D])
    return {
        "n_heldout": n,
        "cin": mean([cin(vh.v, d) for d in D]),
        "cin_null_relu": null,  # sqrt(k/(2r)), ||g||²-weighted over modules
        "cin_null_norelu": null * 2**0.5,  # sqrt(k/r)
        "cin_random_empirical": mean([cin(rv, d) for rv in rand for d in D]),
    }


# ---------------------------------------------------------------------------------------------------
# CLI


def _compose(overrides):
    from hydra import compose, initialize_config_dir

    from projected_grpo.config import register_configs, validate
    from projected_grpo.train import CONF_DIR

    register_configs()
    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        cfg = compose("train", overrides=list(overrides))
    validate(cfg)
    return cfg


def _setup(overrides):
    """(cfg, loop.Setup without v_hack): the same model and problems the train loop passes to get_v_hack."""
    from projected_grpo.loop import build_setup

    cfg = _compose(overrides)
    return cfg, build_setup(cfg, Path("."), with_v_hack=False)


def cli_extract(overrides) -> Path:
    cfg, s = _setup(overrides)
    if cfg.vhack.path is None:
        vh = get_v_hack(cfg, s.model, s.tokenizer, s.problems, s.cache_dir)
        print(f"v_hack: {'extracted' if vh.extracted else 'already cached'} {vh.path}")
        return vh.path
    source = VSource(_enum_str(cfg.vhack.source))
    if source == VSource.random:
        raise VHackError("vhack.source=random is derived at load time from the real file; extract source=real")
    pairs, _ = make_pairs(cfg.vhack, s.problems, source)
    path = Path(cfg.vhack.path).expanduser()
    extract_and_save(s.model, s.tokenizer, pairs, cfg.vhack, extraction_meta(cfg, s.model, pairs, source), path)
    print(f"v_hack: extracted {path}")
    return path


def cli_inspect(path, overrides) -> dict:
    cfg, s = _setup(overrides)
    meta, V, S = read_v_hack(Path(path), "the inspect PATH argument")
    print(f"{path}\n  " + "\n  ".join(f"{k}: {v}" for k, v in sorted(meta.items())))
    vh = load_v_hack(path, s.model, int(cfg.vhack.k), float(cfg.vhack.drop_bottom_frac), {"model": model_id(cfg.model)})
    print(f"\n{'module':48s} {'k':>3s} {'r':>4s} {'S_0':>9s} {'S_k-1':>9s} {'S_last':>9s} {'S_last/S_0':>10s}")
    for n in sorted(V):
        s_ = S[n]
        k = vh.k_per_module.get(n, 0)
        ratio = float(s_[-1] / s_[0]) if float(s_[0]) > 0 else 0.0
        print(f"{n:48s} {k:3d} {V[n].shape[1]:4d} {float(s_[0]):9.4g} {float(s_[max(k - 1, 0)]):9.4g} "
              f"{float(s_[-1]):9.4g} {ratio:10.3f}")  # fmt: skip
    print(f"\naxes kept {vh.kept_axes}/{vh.total_axes}, modules kept {len(vh.v)}/{len(V)}, "
          f"S floor {vh.threshold:.4g} (drop_bottom_frac={cfg.vhack.drop_bottom_frac})")  # fmt: skip
    _, heldout = make_pairs(cfg.vhack, s.problems, VSource.real)
    report = {"path": str(path), "kept_axes": vh.kept_axes, "total_axes": vh.total_axes}
    if heldout:
        G = per_completion_grads(s.model, s.tokenizer, heldout, MICRO_BATCH)
        report.update(heldout_report(vh, G, int(cfg.vhack.seed)))
        print(
            f"held-out ({report['n_heldout']} pairs) mean cin = {report['cin']:.4f}   random null: "
            f"sqrt(k/2r) = {report['cin_null_relu']:.4f}, sqrt(k/r) = {report['cin_null_norelu']:.4f}, "
            f"empirical random V = {report['cin_random_empirical']:.4f}"
        )
    else:
        print("no held-out pairs (vhack.n_heldout=0): cin not measured")
    print(json.dumps(report))
    return report


USAGE = "usage: python -m projected_grpo.vhack extract [overrides...] | inspect PATH [overrides...]"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if argv[:1] == ["extract"]:
        cli_extract(argv[1:])
    elif argv[:1] == ["inspect"] and len(argv) >= 2:
        cli_inspect(argv[1], argv[2:])
    else:
        print(USAGE, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # run the canonical module's main (not a second copy of its classes as __main__)
    from projected_grpo.vhack import main as _main

    sys.exit(_main())
