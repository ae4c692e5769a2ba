"""Hydra entrypoint. Validates the config before importing anything heavy, then builds and trains."""

from __future__ import annotations

import hashlib
import logging
import os
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from projected_grpo.config import CONF_DIR, ConfigError, register_configs, validate

log = logging.getLogger(__name__)
register_configs()


def _safe(name) -> str:
    """A job dir name from override_dirname: no '/', at most 200 chars (long names end in a hash)."""
    name = str(name or "").replace("/", "_")
    return name if len(name) <= 200 else f"{name[:180]}-{hashlib.sha1(name.encode()).hexdigest()[:10]}"


# Run-dir resolvers (conf/train.yaml `hydra:`). Registered at import, so SLURM workers unpickling `main`
# have them too. use_cache=True: resolved once in the launching process and carried in the config's
# resolver cache into every job, so a requeued job sees the same dir.
for _name, _fn in {
    "pg.pid": lambda: str(os.getpid()),
    "pg.name": lambda experiment: _safe(experiment) if experiment else "sweep",
    "pg.safe": _safe,
}.items():
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _fn, use_cache=True)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        validate(cfg)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        sys.exit(2)
    from projected_grpo.env.leetcode import DataError
    from projected_grpo.loop import run  # heavy imports (torch, transformers) only after validation

    try:
        return run(cfg)
    except DataError as e:  # a bad env.source: one line naming file:line (or hub id[row]) and field
        print(f"data error: {e}", file=sys.stderr)
        sys.exit(2)
