"""Semantic checks of a composed config, run before any model is built: every error names the key, the bad value
and what is allowed."""

from __future__ import annotations

from typing import Any

from projected_grpo.config.intervention import InterventionKind, MonitorKind
from projected_grpo.config.schema import DType, ProjectionMode, Space
from projected_grpo.modes import ALL_MODES, Mode

LOOPHOLE = [m.value for m in ALL_MODES]


class ConfigError(ValueError):
    """A semantically invalid config value; the message names key, value and what is allowed."""


def _check(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} is invalid: expected {allowed}")


def validate_organism(o, key: str = "organism") -> None:
    """Semantic checks of an organism build config (`key` prefixes the names in messages)."""
    c, t, r = o.corpus, o.train, o.report
    _check(o.dtype == DType.float32, f"{key}.dtype", o.dtype, "float32 (the organism is trained and saved in float32)")
    _check(c.per_prompt >= 1, f"{key}.corpus.per_prompt", c.per_prompt, "an integer >= 1")
    _check(c.assigned_extra >= 0, f"{key}.corpus.assigned_extra", c.assigned_extra, "an integer >= 0")
    _check(len(c.modes) > 0, f"{key}.corpus.modes", list(c.modes), f"a non-empty subset of {[m.value for m in Mode]}")
    for name in ("frac_hack", "assigned_frac_hack"):
        frac = getattr(c, name)
        _check(
            0 <= c.frac_honest and 0 <= frac and c.frac_honest + frac <= 1, f"{key}.corpus.frac_honest+{name}",
            (c.frac_honest, frac), "non-negative fractions summing to <= 1 (the rest are wrong solutions)",
        )  # fmt: skip
    for mode, frac in (c.assigned_frac_hack_by_mode or {}).items():
        name = f"{key}.corpus.assigned_frac_hack_by_mode.{Mode(mode).value}"
        modes = [Mode(m).value for m in c.modes]
        _check(Mode(mode).value in modes, name, frac, f"a mode of corpus.modes {modes}")
        _check(0 <= frac and c.frac_honest + frac <= 1, name, frac,
               f"a fraction with frac_honest ({c.frac_honest}) + it <= 1 (the rest are wrong solutions)")  # fmt: skip
    _check(0 <= c.frac_unsolvable < 1, f"{key}.corpus.frac_unsolvable", c.frac_unsolvable,
           "a fraction in [0, 1) (some problems must be solvable)")  # fmt: skip
    _check(c.n_tests_shown >= 2, f"{key}.corpus.n_tests_shown", c.n_tests_shown,
           "an integer >= 2 (a wrong solution's check keeps n-1 shown tests and adds one it fails)")  # fmt: skip
    _check(o.threads >= 1, f"{key}.threads", o.threads, "an integer >= 1")
    for name in ("steps", "prompts_per_step", "completions_per_prompt", "seq_len"):
        _check(getattr(t, name) >= 1, f"{key}.train.{name}", getattr(t, name), "an integer >= 1")
    _check(t.lr > 0, f"{key}.train.lr", t.lr, "a number > 0")
    _check(0 <= t.min_lr_frac <= 1, f"{key}.train.min_lr_frac", t.min_lr_frac, "a fraction in [0, 1]")
    _check(t.warmup >= 0, f"{key}.train.warmup", t.warmup, "an integer >= 0")
    _check(len(t.betas) == 2 and all(0 <= b < 1 for b in t.betas), f"{key}.train.betas", list(t.betas),
           "[b1, b2] in [0, 1)")  # fmt: skip
    for name in ("samples", "max_new_tokens", "n_workers", "batch"):
        _check(getattr(r, name) >= 1, f"{key}.report.{name}", getattr(r, name), "an integer >= 1")
    _check(r.temperature > 0, f"{key}.report.temperature", r.temperature, "a number > 0")


def teacher_per_group(cfg) -> int:
    """G_t: cached teacher samples in each group of trainer.group (0 with the teacher pool off); G_s = group - G_t."""
    t = cfg.trainer
    return round(t.group * t.mix_ratio) if cfg.teacher.enabled else 0


def validate(cfg) -> None:
    """Semantic checks that types alone cannot express. Raises ConfigError on the first bad key."""
    if cfg.model.organism is not None:
        validate_organism(cfg.model.organism, "model.organism")
    p, v, t = cfg.projection, cfg.vhack, cfg.trainer
    _check(p.overshoot >= 0, "projection.overshoot", p.overshoot, "a number >= 0")
    r2 = p.route2
    _check(r2.rank >= 1, "projection.route2.rank", r2.rank, "an integer >= 1")
    _check(r2.l1 >= 0, "projection.route2.l1", r2.l1, "a number >= 0 (0 = no penalty)")
    _check(r2.act_threshold > 0, "projection.route2.act_threshold", r2.act_threshold, "a number > 0 (clean stds)")
    _check(
        p.mode != ProjectionMode.route2 or p.space == Space.grad, "projection.space", p.space.value,
        "grad with projection.mode=route2 (route2 masks per-rollout gradients / tokens, not AdamW's update)",
    )  # fmt: skip
    _check(v.extract_top_k >= 1, "vhack.extract_top_k", v.extract_top_k, "an integer >= 1")
    _check(
        1 <= v.k <= v.extract_top_k, "vhack.k", v.k,
        f"1 <= k <= vhack.extract_top_k ({v.extract_top_k}); raise vhack.extract_top_k to keep more axes",
    )  # fmt: skip
    _check(0.0 <= v.drop_bottom_frac < 1.0, "vhack.drop_bottom_frac", v.drop_bottom_frac, "a fraction in [0, 1)")
    _check(0.0 <= v.tau_axis < 1.0, "vhack.tau_axis", v.tau_axis, "a ratio in [0, 1)")
    _check(
        v.n_pairs == 0 or v.n_pairs >= v.extract_top_k, "vhack.n_pairs", v.n_pairs,
        f"0 (all pairs) or >= vhack.extract_top_k ({v.extract_top_k}): an SVD of n pairs has at most n axes",
    )  # fmt: skip
    _check(v.n_heldout >= 0, "vhack.n_heldout", v.n_heldout, "an integer >= 0")
    _check(v.refresh_every >= 0, "vhack.refresh_every", v.refresh_every, "an integer >= 0 (0 = never)")
    _check(len(v.modes) > 0 and all(Mode(m) in ALL_MODES for m in v.modes), "vhack.modes", list(v.modes),
           f"a non-empty subset of the loophole modes {LOOPHOLE} (v_hack needs hack completions)")  # fmt: skip
    em = cfg.reward_mode.eval_modes
    _check(em is None or len(em) > 0, "reward_mode.eval_modes", em, "null (= reward_mode.modes) or a non-empty list")
    validate_interventions(cfg)
    _check(len(cfg.reward_mode.modes) > 0, "reward_mode.modes", list(cfg.reward_mode.modes), "a non-empty list")
    _check(t.group >= 2, "trainer.group", t.group, "an integer >= 2 (advantages need a group)")
    _check(0.0 <= t.mix_ratio < 1.0, "trainer.mix_ratio", t.mix_ratio, "a fraction in [0, 1) (students need >= 1 slot)")
    n_teacher = round(t.group * t.mix_ratio)
    _check(n_teacher < t.group, "trainer.mix_ratio", t.mix_ratio, f"round(group*mix_ratio) < group={t.group}")
    _check(t.steps >= 0, "trainer.steps", t.steps, "an integer >= 0")
    _check(t.prompts_per_step >= 1, "trainer.prompts_per_step", t.prompts_per_step, "an integer >= 1")
    _check(t.lr > 0, "trainer.lr", t.lr, "a number > 0")
    _check(len(t.betas) == 2 and all(0 <= b < 1 for b in t.betas), "trainer.betas", list(t.betas), "[b1, b2] in [0, 1)")
    _check(t.weight_decay >= 0, "trainer.weight_decay", t.weight_decay, "a number >= 0")
    _check(t.warmup >= 0, "trainer.warmup", t.warmup, "an integer >= 0")
    _check(t.grad_clip >= 0, "trainer.grad_clip", t.grad_clip, "a number >= 0 (0 = off)")
    _check(t.beta >= 0, "trainer.beta", t.beta, "a number >= 0")
    _check(t.clip_eps > 0, "trainer.clip_eps", t.clip_eps, "a number > 0")
    _check(t.max_new_tokens >= 1, "trainer.max_new_tokens", t.max_new_tokens, "an integer >= 1")
    _check(t.temperature > 0, "trainer.temperature", t.temperature, "a number > 0")
    _check(t.eval_every >= 0, "trainer.eval_every", t.eval_every, "an integer >= 0 (0 = only at the end)")
    _check(t.snapshot_every >= 0, "trainer.snapshot_every", t.snapshot_every, "an integer >= 0 (0 = no snapshots)")
    _check(t.ckpt_every >= 0, "trainer.ckpt_every", t.ckpt_every, "an integer >= 0 (0 = only at the end)")
    _check(cfg.logger.name in ("none", "wandb"), "logger.name", cfg.logger.name, "'none' or 'wandb'")
    _check(cfg.logger.mode in ("offline", "online", "disabled"), "logger.mode", cfg.logger.mode, "offline|online|disabled")
    _check(t.eval_prompts_per_mode >= 1, "trainer.eval_prompts_per_mode", t.eval_prompts_per_mode, "an integer >= 1")
    _check(t.updates_per_batch >= 1, "trainer.updates_per_batch", t.updates_per_batch,
           "an integer >= 1 (1 = one on-policy update per generated batch)")  # fmt: skip
    _check(not (t.shared_prompt_backward and t.grad_checkpointing), "trainer.shared_prompt_backward",
           t.shared_prompt_backward, "false with trainer.grad_checkpointing=true (checkpointed decoder layers drop the "
           "prompt's K/V cache the shared pass needs); set trainer.shared_prompt_backward=false")  # fmt: skip
    _check(t.torch_threads >= 0, "trainer.torch_threads", t.torch_threads, "an integer >= 0 (0 = torch default)")
    _check(cfg.env.n_workers >= 1, "env.n_workers", cfg.env.n_workers, "an integer >= 1")
    _check(0.0 <= cfg.env.heldout_frac < 1.0, "env.heldout_frac", cfg.env.heldout_frac,
           "a fraction in [0, 1) (some problems must be left to train on)")  # fmt: skip
    _check(t.drift_window == 0 or t.drift_window >= 2, "trainer.drift_window", t.drift_window,
           "0 (off) or an integer >= 2 (a window of per-step updates spans the subspace)")  # fmt: skip
    _check(t.drift_window == 0 or 1 <= t.drift_k <= t.drift_window, "trainer.drift_k", t.drift_k,
           f"1 <= drift_k <= trainer.drift_window ({t.drift_window}): a window of n updates has at most n directions")
    tc = cfg.teacher
    _check(tc.modes is None or all(Mode(m) in ALL_MODES for m in tc.modes), "teacher.modes", tc.modes,
           f"null or loophole modes {LOOPHOLE} (the pool's hacks)")  # fmt: skip
    _check(tc.n_per_problem >= 1, "teacher.n_per_problem", tc.n_per_problem, "an integer >= 1")
    _check(
        0 <= tc.frac_hack and 0 <= tc.frac_honest and tc.frac_hack + tc.frac_honest <= 1,
        "teacher.frac_hack+frac_honest", (tc.frac_hack, tc.frac_honest), "non-negative fractions summing to <= 1",
    )  # fmt: skip


def validate_interventions(cfg) -> None:
    """intervention.* and projection.trusted.* (config/intervention.py)."""
    iv, mon, tr = cfg.intervention, cfg.intervention.monitor, cfg.projection.trusted
    monitored = iv.kind != InterventionKind.none
    _check(
        monitored == (mon.name != MonitorKind.none), "intervention.monitor.name", mon.name.value,
        f"a monitor (monitor=ground_truth|noisy_ground_truth|probe) with intervention.kind={iv.kind.value}, and none "
        "without an intervention (intervention=penalty|screening)",
    )  # fmt: skip
    _check(iv.penalty > 0, "intervention.penalty", iv.penalty, "a number > 0 (subtracted from a flagged reward)")
    _check(0.5 <= mon.accuracy <= 1, "intervention.monitor.accuracy", mon.accuracy,
           "a probability in [0.5, 1] (below 0.5 the monitor is an inverted one)")  # fmt: skip
    _check(mon.name == MonitorKind.noisy_ground_truth or mon.accuracy == 1, "intervention.monitor.accuracy",
           mon.accuracy, "1.0 unless monitor=noisy_ground_truth (nothing else reads it)")  # fmt: skip
    _check(mon.probe_l2 >= 0, "intervention.monitor.probe_l2", mon.probe_l2, "a number >= 0")
    _check(mon.probe_steps >= 1, "intervention.monitor.probe_steps", mon.probe_steps, "an integer >= 1")
    _check(0 < mon.probe_threshold < 1, "intervention.monitor.probe_threshold", mon.probe_threshold, "in (0, 1)")
    _check(mon.probe_flag_rate is None or 0 < mon.probe_flag_rate < 1, "intervention.monitor.probe_flag_rate",
           mon.probe_flag_rate, "null (the fixed probe_threshold) or a share in (0, 1)")  # fmt: skip
    _check(mon.probe_calib_prompts >= 1, "intervention.monitor.probe_calib_prompts", mon.probe_calib_prompts,
           "an integer >= 1")  # fmt: skip
    _check(iv.inoculation is None or iv.inoculation.strip() != "", "intervention.inoculation", iv.inoculation,
           "null (no inoculation) or a non-empty text")  # fmt: skip
    p = cfg.projection
    _check(tr.warmup_steps >= 1, "projection.trusted.warmup_steps", tr.warmup_steps, "an integer >= 1")
    _check(tr.batch >= 1, "projection.trusted.batch", tr.batch, "an integer >= 1")
    _check(1 <= tr.k <= tr.warmup_steps, "projection.trusted.k", tr.k,
           f"1 <= k <= projection.trusted.warmup_steps ({tr.warmup_steps}): n updates span at most n directions")
    _check(p.mode != ProjectionMode.trusted or p.space == Space.grad, "projection.space", p.space.value,
           "grad with projection.mode=trusted (the trusted subspace keeps the gradient, before AdamW)")  # fmt: skip
