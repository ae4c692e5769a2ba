"""Hydra entrypoint. Validates the config before importing anything heavy, then builds and trains."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from projected_grpo.config import ConfigError, register_configs, validate

log = logging.getLogger(__name__)
register_configs()
# conf/ sits at the repository root (the package is installed editable from the checkout).
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        validate(cfg)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        sys.exit(2)
    from projected_grpo.loop import run  # heavy imports (torch, transformers) only after validation

    return run(cfg)
