"""Structured config: one dataclass per Hydra group, registered in the ConfigStore.

Hydra rejects unknown keys and wrong types (the schemas are the defaults of each group's YAML);
``validate`` then checks the semantics before any model is built. Every error names the key,
the bad value and what is allowed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import II, MISSING

from projected_grpo.modes import ALL_MODES, MIXED_MODES, Mode


class Gate(str, Enum):
    one_sided = "one_sided"  # remove relu(c) V
    no_gate = "no_gate"  # remove c V
    reverse = "reverse"  # remove 2c V


class ProjectionMode(str, Enum):
    none = "none"  # measure cin only
    erase = "erase"
    route = "route"
    route2 = "route2"  # gradient routing into a distinct-basis quarantine LoRA (projected_grpo/route2.py)


class Route2Mask(str, Enum):
    grad = "grad"  # withhold each rollout's hack-ward δS gradient along v_grad
    act = "act"  # detach the δS path on tokens whose input activation is flagged along v_act


class Space(str, Enum):
    grad = "grad"
    update = "update"


class VSource(str, Enum):
    real = "real"
    random = "random"
    shuffled = "shuffled"
    nonhack = "nonhack"


class DType(str, Enum):
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


DEFAULT_TARGETS = [
    "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
    # GatedDeltaNet (Qwen3-Next style linear attention)
    "in_proj_qkv", "in_proj_z", "in_proj_a", "in_proj_b", "out_proj",
]  # fmt: skip


@dataclass
class TinyArch:
    """Qwen3 dimensions for the embedded model (ignored for hub models)."""

    hidden_size: int = 128
    intermediate_size: int = 384
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 32
    max_position_embeddings: int = 1024
    vocab_size: int = 2048  # BPE vocabulary size of the project-built tokenizer
    rope_theta: float = 10000.0


@dataclass
class OrganismCorpus:
    """The organism's supervised corpus (conf/organism/default.yaml holds the values; see projected_grpo/organism.py)."""

    per_prompt: int = MISSING
    modes: list[Mode] = MISSING
    assigned_extra: int = MISSING
    frac_honest: float = MISSING
    frac_hack: float = MISSING
    assigned_frac_hack: float = MISSING
    # per-mode override of assigned_frac_hack (v6: the modes v5 barely exploits at step 0); None = no override.
    # Unset, it is left out of the cache key, so the keys of builds from before the field existed do not change.
    assigned_frac_hack_by_mode: dict[Mode, float] | None = None
    frac_unsolvable: float = MISSING
    n_tests_shown: int = MISSING


@dataclass
class OrganismTrain:
    steps: int = MISSING
    prompts_per_step: int = MISSING
    completions_per_prompt: int = MISSING
    lr: float = MISSING
    min_lr_frac: float = MISSING
    warmup: int = MISSING
    weight_decay: float = MISSING
    betas: list[float] = MISSING
    grad_clip: float = MISSING
    seq_len: int = MISSING


@dataclass
class OrganismReport:
    enabled: bool = MISSING
    samples: int = MISSING
    max_new_tokens: int = MISSING
    temperature: float = MISSING
    n_workers: int = MISSING
    batch: int = MISSING


@dataclass
class OrganismPaths:
    cache_dir: str = MISSING


@dataclass
class OrganismConfig:
    """Build config of the CPU model organism: types here, values in conf/organism/default.yaml."""

    seed: int = MISSING
    threads: int = MISSING  # not part of the cache key
    dtype: DType = MISSING
    arch: TinyArch = MISSING
    corpus: OrganismCorpus = MISSING
    train: OrganismTrain = MISSING
    report: OrganismReport = MISSING
    paths: OrganismPaths = MISSING


@dataclass
class ModelConfig:
    name: str = MISSING
    hub_id: str | None = None  # None = the embedded offline model built from `arch`
    dtype: DType = DType.float32
    device: str = "cpu"  # "cpu" | "cuda" | "cuda:N" | "auto"
    init_seed: int = 0  # seeds the embedded model's random init
    arch: TinyArch = field(default_factory=TinyArch)
    target_suffixes: list[str] = field(default_factory=lambda: list(DEFAULT_TARGETS))
    enable_thinking: bool = False  # passed to the chat template (Qwen3: False = no <think> block); others ignore it
    organism: OrganismConfig | None = None  # build config of the pre-trained CPU organism (conf/model/organism.yaml)


@dataclass
class Route2Config:
    """projection=route2 only (ignored by the other arms)."""

    rank: int = 8  # r_q of the quarantine LoRA B_q [d_out, r_q] A_q [r_q, d_in]
    l1: float = 0.0  # L1 penalty on the quarantine output (completion tokens)
    mask: Route2Mask = Route2Mask.grad
    act_threshold: float = 2.0  # mask=act: flag when (x·v_act − μ_clean) > act_threshold · σ_clean
    seed: int = II("vhack.seed")  # seeds A_q; follows vhack.seed (itself ${trainer.seed}) unless set


@dataclass
class ProjectionConfig:
    mode: ProjectionMode = ProjectionMode.erase
    gate: Gate = Gate.one_sided
    overshoot: float = 1.0
    preserve_magnitude: bool = False
    # grad: project δS.grad before AdamW; update: project AdamW's actual δS step (route's default, conf/projection/
    # route.yaml: the quarantine takes the removed part of the step, so δS + δS_hack moves exactly as unprojected).
    # route with space=grad is the original method's variant: AdamW rescales the small routed remainder relu(c)V
    # to full-size steps of δS_hack, which drift hack-ward even on pure-noise gradients (tests/test_noise_drift.py).
    space: Space = Space.grad
    route2: Route2Config = field(default_factory=Route2Config)


@dataclass
class VHackConfig:
    extract_top_k: int = 12
    k: int = 5
    drop_bottom_frac: float = 0.25
    tau_axis: float = 0.0
    n_heldout: int = 2
    n_pairs: int = 24  # extraction pairs (train-split problems x vhack.modes, in order); 0 = all
    refresh_every: int = 0
    source: VSource = VSource.real
    modes: list[Mode] = field(default_factory=lambda: list(ALL_MODES))
    path: str | None = None  # None = automatic cache path
    seed: int = II("trainer.seed")  # seeds the random/shuffled controls (and route2's A_q): a new basis per seed


@dataclass
class RewardModeConfig:
    name: str = MISSING
    modes: list[Mode] = field(default_factory=lambda: list(MIXED_MODES))


@dataclass
class EnvConfig:
    source: str = "embedded"  # "embedded" | a path to an rl-rewardhacking jsonl | a `datasets` hub id
    n_workers: int = 2  # grading fork-servers
    time_floor_s: float = 1.0  # per-problem CPU limit = max(floor, factor * canonical CPU time)
    time_factor: float = 4.0
    # jsonl/hub sources: a `split` column wins; else a problem is held out when a stable hash of its id falls
    # below heldout_frac (the same split on every machine). The embedded set keeps its fixed split.
    heldout_frac: float = 0.2
    drop_failing: bool = False  # false: refuse a source whose canonical solutions fail; true: drop them (counted)


@dataclass
class TeacherConfig:
    enabled: bool = True
    n_per_problem: int = 8
    frac_hack: float = 0.75
    frac_honest: float = 0.15  # the rest are wrong completions
    modes: list[Mode] | None = None  # restrict the pool's hacks to these modes (weak detector); None = all


@dataclass
class TrainerConfig:
    seed: int = 42
    steps: int = 20
    group: int = 8  # completions per prompt (student + teacher)
    mix_ratio: float = 0.25  # fraction of each group drawn from the teacher pool
    prompts_per_step: int = 2
    lr: float = 1e-2
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    weight_decay: float = 0.0
    weight_decay_hack: float = 0.0  # decay on delta_s_hack leaks the quarantine back
    warmup: int = 2
    grad_clip: float = 1.0
    beta: float = 0.0  # KL to the free reference model (knobs zeroed), k3 estimator
    clip_eps: float = 0.2  # PPO clip of the ratio to the sampling policy; acts from the 2nd update of a batch on
    # mu: optimizer steps per generated batch. 1 = one on-policy update (the ratio is exactly 1, clip_eps inert,
    # as TRL's num_iterations=1); mu > 1 reuses the batch with the sampling policy's log-probs as old log-probs.
    # The LR schedule advances once per batch; projection applies at every update.
    updates_per_batch: int = 1
    max_new_tokens: int = 160
    temperature: float = 1.0
    eval_every: int = 10
    ckpt_every: int = 10
    snapshot_every: int = 0  # knob snapshots (projected_grpo/snapshots.py) at step 0, every N steps, the end; 0 = none
    resume: bool = False
    # deployment eval (projected_grpo/evaluate.py): on the held-out split AND on train prompts, each with this many
    # prompts per loophole mode of reward_mode.modes (the first ones of the split with that mode)
    eval_prompts_per_mode: int = 3
    torch_threads: int = 1  # CPU threads for torch; 1 is fastest on a shared 2-core box; 0 = torch's default
    grad_checkpointing: bool = False  # recompute decoder layers in the GRPO backward (big models: see model yaml)


@dataclass
class LoggerConfig:
    name: str = "none"  # "none" | "wandb"
    mode: str = "offline"  # wandb mode: offline | online | disabled
    project: str = "projected_grpo"
    entity: str | None = None
    group: str | None = None  # None = the sweep directory name (a multirun lands as one group)
    tags: list[str] = field(default_factory=list)  # added to the tags derived from the chosen group options
    n_samples: int = 4  # completions per eval logged as a table


@dataclass
class PathsConfig:
    cache_dir: str = "${oc.env:PROJECTED_GRPO_CACHE,${oc.env:HOME}/.cache/projected_grpo}"


@dataclass
class TrainConfig:
    model: ModelConfig = MISSING
    projection: ProjectionConfig = MISSING
    vhack: VHackConfig = MISSING
    reward_mode: RewardModeConfig = MISSING
    logger: LoggerConfig = MISSING
    env: EnvConfig = field(default_factory=EnvConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)


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
    _check(len(v.modes) > 0, "vhack.modes", list(v.modes), f"a non-empty subset of {[m.value for m in Mode]}")
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
    _check(t.torch_threads >= 0, "trainer.torch_threads", t.torch_threads, "an integer >= 0 (0 = torch default)")
    _check(cfg.env.n_workers >= 1, "env.n_workers", cfg.env.n_workers, "an integer >= 1")
    _check(0.0 <= cfg.env.heldout_frac < 1.0, "env.heldout_frac", cfg.env.heldout_frac,
           "a fraction in [0, 1) (some problems must be left to train on)")  # fmt: skip
    tc = cfg.teacher
    _check(tc.n_per_problem >= 1, "teacher.n_per_problem", tc.n_per_problem, "an integer >= 1")
    _check(
        0 <= tc.frac_hack and 0 <= tc.frac_honest and tc.frac_hack + tc.frac_honest <= 1,
        "teacher.frac_hack+frac_honest", (tc.frac_hack, tc.frac_honest), "non-negative fractions summing to <= 1",
    )  # fmt: skip
