"""The config schema: the enums and one dataclass per Hydra group, registered in the ConfigStore (Hydra rejects
unknown keys and wrong types; the schemas are the defaults of each group's YAML)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import II, MISSING

from projected_grpo.config.intervention import InterventionConfig, TrustedConfig
from projected_grpo.modes import ALL_MODES, MIXED_MODES, Mode

# conf/ sits at the repository root (the package is installed editable from the checkout).
CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")


class Gate(str, Enum):
    one_sided = "one_sided"  # remove relu(c) V
    no_gate = "no_gate"  # remove c V
    reverse = "reverse"  # remove 2c V


class ProjectionMode(str, Enum):
    none = "none"  # measure cin only
    erase = "erase"
    route = "route"
    route2 = "route2"  # gradient routing into a distinct-basis quarantine LoRA (projected_grpo/route2/)
    trusted = "trusted"  # keep the gradient inside a clean warm-up's update subspace (config/intervention.py)


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


class ExploitForm(str, Enum):  # where a v_hack pair's hack writes its exploit: after the code, or first (organism)
    trailing = "trailing"
    leading = "leading"


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
    """The organism's supervised corpus (conf/organism/default.yaml holds the values; see projected_grpo/organism/)."""

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
    trusted: TrustedConfig = field(default_factory=TrustedConfig)


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
    exploit_form: ExploitForm = ExploitForm.trailing  # hack completions of the pairs: exploit after the code / first
    modes: list[Mode] = field(default_factory=lambda: list(ALL_MODES))
    path: str | None = None  # None = automatic cache path
    seed: int = II("trainer.seed")  # seeds the random/shuffled controls (and route2's A_q): a new basis per seed


@dataclass
class RewardModeConfig:
    name: str = MISSING
    modes: list[Mode] = field(default_factory=lambda: list(MIXED_MODES))
    eval_modes: list[Mode] | None = None  # deployment eval's modes; None = modes (reward_mode=none: the mixed ones)


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
    # training paths, the same gradients to float rounding (README: trainer): folded_forward = W' = W + U diag(knob) Vh
    # with hook-computed knob gradients (adapter.py; route2's quarantine unfolded); shared_prompt_backward = the prompt
    # once per source, its K/V shared by the completions (loss.group_logprobs; needs grad_checkpointing=false)
    folded_forward: bool = True
    shared_prompt_backward: bool = True
    # drift diagnostic (projected_grpo/drift.py): canonical correlations of consecutive windows' top δS-update
    # directions, every drift_window steps, top drift_k directions per window
    drift_window: int = 5
    drift_k: int = 2


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
    intervention: InterventionConfig = MISSING
    env: EnvConfig = field(default_factory=EnvConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)


def register_configs() -> None:
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
