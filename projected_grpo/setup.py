"""Run setup: the problems, the model with its knobs and v_hack (build_setup), the run's opening summary lines,
and the run-dir files written before training (.hydra/*.yaml, train.log, status.json)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from projected_grpo import vhack as vhack_mod
from projected_grpo.adapter import adapter_modules, set_fold_train, wrap_model
from projected_grpo.atomic import write_json, write_text
from projected_grpo.env.problems import load_problem_set
from projected_grpo.model import build_model
from projected_grpo.organism import load_or_build
from projected_grpo.tokens import prompt_ids

HYDRA_SUBDIR = ".hydra"  # where record_run_files writes the job's config (report/jobs.py reads overrides.yaml)


@dataclass
class Setup:
    model: torch.nn.Module
    tokenizer: object
    run_dir: Path
    cache_dir: Path
    wrapped: list[str]
    problems: list = field(default_factory=list)
    v_hack: object | None = None  # vhack.VHack
    data: object | None = None  # env.problems.ProblemSet (build_setup always sets it): source, split rule, dropped


def load_model(model_cfg, cache_dir: Path | None):
    """(model, tokenizer) of model_cfg: model.build_model with the organism as a model source (built on a miss)."""
    return build_model(model_cfg, cache_dir, organism_loader=load_or_build)


def run_dir() -> Path:
    return Path(HydraConfig.get().runtime.output_dir)


def build_setup(cfg: DictConfig, out_dir: Path, with_v_hack: bool = True) -> Setup:
    cache_dir = Path(cfg.paths.cache_dir).expanduser()
    data = load_problem_set(cfg.env, list(cfg.reward_mode.modes), cache_dir)  # first: a bad source fails fast
    model, tok = load_model(cfg.model, cache_dir)
    wrapped = wrap_model(model, list(cfg.model.target_suffixes), cache_dir)
    set_fold_train(model, cfg.trainer.folded_forward)
    s = Setup(model, tok, out_dir, cache_dir, wrapped, data.problems, data=data)
    if with_v_hack:
        s.v_hack = vhack_mod.get_v_hack(cfg, model, tok, data.problems, cache_dir)
    return s


def summary_lines(s: Setup, cfg: DictConfig) -> list[str]:
    mods = adapter_modules(s.model)
    n_knob = sum(m.r for m in mods.values())
    n_base = sum(p.numel() for p in s.model.parameters() if not p.requires_grad)
    lines = [
        (
            f"model: {cfg.model.name} ({cfg.model.hub_id or 'embedded Qwen3'}, {n_base / 1e6:.2f}M frozen params, "
            f"dtype {cfg.model.dtype.value}, device {next(s.model.parameters()).device})"
        ),
        f"wrapped modules: {len(mods)}",
        f"trainable knob parameters: {2 * n_knob} (delta_s {n_knob} + delta_s_hack {n_knob})",
    ]
    if s.v_hack is not None:
        vh = s.v_hack
        how = "extracted" if vh.extracted else "loaded"
        lines.append(
            f"v_hack: {how} {vh.path} (source {vh.source}); {len(vh.v)} modules, axes kept {vh.kept_axes}/"
            f"{vh.total_axes}, noise floor {vh.threshold:.3g}"
        )
    lines += data_lines(s, cfg)
    lines.append(f"run dir: {s.run_dir}")
    return lines


def data_lines(s: Setup, cfg: DictConfig) -> list[str]:
    """Problems per split and mode, the prompt format and the memory table (the `trainer.steps=0` summary)."""
    from projected_grpo import memory
    from projected_grpo.tokens import prompt_format

    d = s.data
    dropped = f": {', '.join(d.dropped)}" if d.dropped else ""
    lines = [f"problems: {len(d.problems)} of {d.n_rows} from {d.source} (split: {d.split_rule}); dropped "
             + f"{len(d.dropped)} failing canonical solutions{dropped}"]  # fmt: skip
    for split, c in d.counts().items():
        modes = ", ".join(f"{k} {v}" for k, v in sorted(c.items()) if k != "total")
        lines.append(f"  {split}: {c['total']} ({modes})")
    n_prompt = max(len(prompt_ids(s.tokenizer, p)) for p in s.problems)
    lines.append(f"prompt format: {prompt_format(s.tokenizer)}; longest prompt {n_prompt} tokens")
    mem = memory.for_run(s.model, cfg, n_prompt)
    lines.append(f"memory ({cfg.model.dtype.value}, computed; see projected_grpo/memory.py):")
    return lines + memory.format_table(mem)


def write_status(out: Path, status: str, **extra) -> None:
    """status.json: running | done | failed (with the exception text), so a report can tell crashed from running."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "status.json", {"status": status, "time": time.time(), **extra}, indent=2)


def record_run_files(cfg: DictConfig, out: Path) -> None:
    """What Hydra writes at job start, written here only once the run is accepted (conf/train.yaml turns
    Hydra's own writing off, so that a refused resume changes nothing in the run dir):
    .hydra/{config,hydra,overrides}.yaml, and train.log (a handler in Hydra's job_logging format)."""
    hc = HydraConfig.get()
    for name, node in (
        ("config.yaml", cfg),
        ("hydra.yaml", HydraConfig.instance().cfg),
        ("overrides.yaml", hc.overrides.task),
    ):
        write_text(out / HYDRA_SUBDIR / name, OmegaConf.to_yaml(node))
    handler = logging.FileHandler(out / f"{hc.job.name}.log")
    handler.setFormatter(logging.Formatter(hc.job_logging.formatters.simple.format))
    logging.getLogger().addHandler(handler)
