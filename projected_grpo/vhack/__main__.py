"""v_hack CLI: `python -m projected_grpo.vhack extract [overrides...]` extracts (into the cache or vhack.path);
`inspect PATH [overrides...]` prints a file's rows, singular values and held-out cin next to the random null."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from projected_grpo.config import VSource
from projected_grpo.vhack.basis import MICRO_BATCH, per_completion_grads
from projected_grpo.vhack.cache import extract_and_save, get_v_hack
from projected_grpo.vhack.controls import heldout_report
from projected_grpo.vhack.pairs import make_pairs
from projected_grpo.vhack.store import VHackError, _enum_str, extraction_meta, load_v_hack, model_id, read_v_hack

# ---------------------------------------------------------------------------------------------------
# CLI


def _compose(overrides):
    from projected_grpo.config import compose_train, validate

    cfg = compose_train(overrides)
    validate(cfg)
    return cfg


def _setup(overrides):
    """(cfg, setup.Setup without v_hack): the same model and problems the train loop passes to get_v_hack."""
    from projected_grpo.setup import build_setup

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


if __name__ == "__main__":
    sys.exit(main())
