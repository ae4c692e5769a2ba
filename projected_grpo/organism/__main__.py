"""Organism CLI: python -m projected_grpo.organism {build|report|path} [organism=v6] [overrides, e.g. train.steps=3]."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from omegaconf import OmegaConf

from projected_grpo.atomic import write_json
from projected_grpo.organism.corpus import train_problems
from projected_grpo.organism.pretrain import build
from projected_grpo.organism.report import print_report, step0_report
from projected_grpo.organism.store import MANIFEST, _sha, compose_config, load, lookup

# ---------------------------------------------------------------------------------------------------
# CLI


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("build", "report", "path"):
        print("usage: python -m projected_grpo.organism {build|report|path} [organism=v6] [overrides: train.steps=3]",
              file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cmd, overrides = argv[0], argv[1:]
    cfg = OmegaConf.to_container(compose_config(overrides), resolve=True, enum_to_str=True)
    cache_dir = Path(cfg["paths"]["cache_dir"]).expanduser()
    path, key, corpus = lookup(cfg, cache_dir)
    if cmd == "path":
        print(path)
        return 0
    if cmd == "build":
        kinds = {k: sum(e["kind"] == k for e in corpus) for k in ("honest", "wrong", "hack")}
        print(f"organism {key}: corpus {len(corpus)} examples {kinds} from {len(train_problems())} train problems")
        if (path / MANIFEST).exists():
            print(f"cache hit: {path} (no rebuild)")
        else:
            build(cfg, cache_dir, corpus=corpus)
            print(f"built: {path}")
    if cmd == "report" or cfg["report"]["enabled"]:
        if not (path / MANIFEST).exists():
            print(f"organism {key} is not built; run: python -m projected_grpo.organism build", file=sys.stderr)
            return 1
        model, tok = load(path)
        rows = step0_report(model, tok, cfg)
        print_report(rows)
        out = path / f"report-{_sha(cfg['report'])[:8]}.json"
        write_json(out, rows, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
