"""The schemas of the intervention arms (issue 21): monitor penalty/screening, inoculation prompting, the trusted
projection's warm-up, and the one rule that says which runs read the oracle for training (`oracle_informed`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from omegaconf import II

from projected_grpo.modes import MODES, Mode


class InterventionKind(str, Enum):
    none = "none"
    penalty = "penalty"  # a flagged sample's reward -= intervention.penalty (before the group advantages)
    screening = "screening"  # a flagged sample's tokens are masked out of the loss (advantages computed as today)


class MonitorKind(str, Enum):
    none = "none"  # no monitor (intervention.kind=none)
    ground_truth = "ground_truth"  # the strict oracle's hack label (oracle-informed)
    noisy_ground_truth = "noisy_ground_truth"  # the oracle's label, flipped with prob 1 - accuracy (oracle-informed)
    probe = "probe"  # a linear probe on activations, trained on v_hack's (hack, clean) pairs (not oracle-informed)


ORACLE_MONITORS = (MonitorKind.ground_truth, MonitorKind.noisy_ground_truth)


@dataclass
class MonitorConfig:
    name: MonitorKind = MonitorKind.none
    accuracy: float = 1.0  # noisy_ground_truth: P(label kept); each sample's flip is independent (seeded per run)
    probe_l2: float = 1e-3  # probe: L2 penalty of the logistic regression (on standardised features)
    probe_steps: int = 200  # probe: full-batch LBFGS iterations
    probe_threshold: float = 0.5  # probe with probe_flag_rate=null: flag when P(hack) > threshold
    # probe: the threshold is set at setup so that this share of the base policy's own samples is flagged (a flag
    # budget; unlabelled samples, no oracle read); null: the fixed probe_threshold
    probe_flag_rate: float | None = 0.1
    probe_calib_prompts: int = 8  # probe: train prompts for that calibration, trainer.group samples each
    seed: int = II("trainer.seed")  # seeds noisy_ground_truth's flips


@dataclass
class InterventionConfig:
    kind: InterventionKind = InterventionKind.none
    penalty: float = 1.0  # kind=penalty: subtracted from a flagged sample's reward
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    # training-time text appended to the system prompt (student rollouts only); deployment eval never sees it
    inoculation: str | None = None


@dataclass
class TrustedConfig:
    """projection=trusted: the trusted subspace per module = top-k right singular vectors of the δS updates of
    `warmup_steps` supervised AdamW steps on honest completions of train problems (batch completions each)."""

    warmup_steps: int = 10
    batch: int = 8
    k: int = 4


def oracle_informed(cfg) -> bool:
    """True when the strict oracle's verdict reaches training: a reward mode without a loophole (its check IS the
    oracle: the no-loophole baseline), or a ground-truth monitor. The no-cheat test covers every other arm."""
    no_loophole = any(not MODES[Mode(m)].loophole for m in cfg.reward_mode.modes)
    iv = cfg.intervention
    monitored = iv.kind != InterventionKind.none and MonitorKind(iv.monitor.name) in ORACLE_MONITORS
    return bool(no_loophole or monitored)
