"""Metric sinks: metrics.jsonl (always) and W&B (logger=wandb). Metric names are defined once, here."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from projected_grpo.atomic import write_text
from projected_grpo.modes import MODES

log = logging.getLogger(__name__)

# One JSON line per optimizer step in metrics.jsonl, with exactly these keys (None where undefined).
STEP_METRICS = [
    "step", "reward", "reward_s", "reward_t", "hack_s", "hack_t", "solve_s", "solve_t",
    "loss", "kl", "grad_norm", "grad_norm_clipped",
    "cin_s", "cin_t", "cin", "cout", "cout_update", "cin_null", "frac_fired", "frac_zero_var",
    "basis_overlap", "v_axes", "lr",
    # projection=route2 only (None for the other arms): flag rates of the mask (tokens for act, rollouts for grad)
    # by student/teacher and by oracle hack/clean rollout (logging only), ||B_q A_q||_F summed, mask refresh overlap
    "frac_flagged", "frac_flagged_s", "frac_flagged_t", "frac_flagged_hack", "frac_flagged_clean",
    "quarantine_norm", "mask_overlap",
    # monitor interventions (interventions.py): flagged fraction of the loss's samples; against the oracle's label
    # (logging only); drift_cc (drift.py, every trainer.drift_window steps); oracle_informed: the oracle's verdict
    # reaches training in this run (config.oracle_informed: reward_mode=none, a ground-truth monitor)
    "frac_monitor_flagged", "monitor_tpr", "monitor_fpr", "drift_cc", "oracle_informed",
    "sec_generation", "sec_grading", "sec_backward", "sec_projection", "sec_step",
    # grader-side failures since the previous row, {reason: count} ({} when none): those completions were graded
    # failed (a dead sandbox server, a supervisor error, a verdict bug), never because of what they did
    "grade_errors",
]  # fmt: skip
PER_MODE = [f"{m}_{spec.code}" for spec in MODES.values() for m in ("hack_s", "solve_s")]
TIMING = [k for k in STEP_METRICS if k.startswith("sec_")]


def mode_key(metric: str, mode) -> str:
    return f"{metric}_{MODES[mode].code}"


class Tracker:
    """Writes metrics.jsonl and, with logger=wandb, the same names to one W&B run per job."""

    def __init__(self, cfg: DictConfig, run_dir: Path, resume_step: int = 0):
        self.path = run_dir / "metrics.jsonl"
        truncate_after(self.path, resume_step)
        self.run = None
        if cfg.logger.name == "wandb":
            self.run = start_wandb(cfg, run_dir)

    def log(self, row: dict) -> None:
        missing = [k for k in STEP_METRICS + PER_MODE if k not in row]
        assert not missing, f"metrics row lacks {missing}"
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.run is not None:
            self.run.log({k: v for k, v in row.items() if v is not None}, step=row["step"])

    def table(self, name: str, columns: list[str], rows: list[list]) -> None:
        if self.run is not None:
            import wandb

            self.run.log({name: wandb.Table(columns=columns, data=rows)})

    def summary(self, summary: dict) -> None:
        if self.run is not None:
            for k, v in flatten({k: v for k, v in summary.items() if k != "config"}).items():  # config is the run's
                self.run.summary[k] = v

    def finish(self, exit_code: int = 0) -> None:
        if self.run is not None:
            self.run.finish(exit_code=exit_code)
            self.run = None


def truncate_after(path: Path, step: int) -> None:
    """Keep only rows with row['step'] <= step (resume); a fresh run (step 0) starts an empty file."""
    if not path.exists():
        return
    rows = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
    write_text(path, "".join(r + "\n" for r in rows))


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "/"))
        elif isinstance(v, (int, float, str, bool)) or v is None:
            out[key] = v
    return out


def start_wandb(cfg: DictConfig, run_dir: Path):
    """One W&B run per job: group = sweep dir name, stable id per run dir (resume='allow')."""
    import hashlib

    import wandb

    lc = cfg.logger
    group = lc.group or run_dir.parent.name
    tags = [
        f"model={cfg.model.name}",
        f"projection={cfg.projection.mode.value}",
        f"reward_mode={cfg.reward_mode.name}",
        f"vhack.source={cfg.vhack.source.value}",
        *lc.tags,
    ]
    run_id = hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:16]
    return wandb.init(
        project=lc.project,
        entity=lc.entity,
        group=group,
        job_type=cfg.projection.mode.value,
        tags=tags,
        config=OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
        dir=str(run_dir),
        id=run_id,
        resume="allow",
        mode=lc.mode,
        reinit="finish_previous",
    )

