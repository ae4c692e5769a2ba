"""The run's config: schema (enums + one typed dataclass per Hydra group, registered in the ConfigStore; the
intervention arms' schemas in intervention) and
validate (semantic checks before any model is built; every error names the key, the bad value and what is allowed).
Import from here: the names below are the public API."""

from omegaconf import DictConfig

from projected_grpo.config.intervention import (
    ORACLE_MONITORS,
    InterventionConfig,
    InterventionKind,
    MonitorConfig,
    MonitorKind,
    TrustedConfig,
    oracle_informed,
)
from projected_grpo.config.schema import (
    CONF_DIR,
    DEFAULT_TARGETS,
    DType,
    EnvConfig,
    ExploitForm,
    Gate,
    LoggerConfig,
    ModelConfig,
    OrganismConfig,
    OrganismCorpus,
    OrganismPaths,
    OrganismReport,
    OrganismTrain,
    PathsConfig,
    ProjectionConfig,
    ProjectionMode,
    RewardModeConfig,
    Route2Config,
    Route2Mask,
    Space,
    TeacherConfig,
    TinyArch,
    TrainConfig,
    TrainerConfig,
    VHackConfig,
    VSource,
    register_configs,
)
from projected_grpo.config.validate import ConfigError, teacher_per_group, validate, validate_organism


def compose_train(overrides=(), return_hydra_config: bool = False) -> DictConfig:
    """The train config `python train.py <overrides>` composes (Hydra compose API; not validated: call validate)."""
    from hydra import compose, initialize_config_dir

    register_configs()
    with initialize_config_dir(version_base="1.3", config_dir=CONF_DIR):
        return compose("train", overrides=list(overrides), return_hydra_config=return_hydra_config)


__all__ = [
    "CONF_DIR",
    "DEFAULT_TARGETS",
    "ORACLE_MONITORS",
    "ConfigError",
    "DType",
    "EnvConfig",
    "ExploitForm",
    "Gate",
    "InterventionConfig",
    "InterventionKind",
    "LoggerConfig",
    "ModelConfig",
    "MonitorConfig",
    "MonitorKind",
    "OrganismConfig",
    "OrganismCorpus",
    "OrganismPaths",
    "OrganismReport",
    "OrganismTrain",
    "PathsConfig",
    "ProjectionConfig",
    "ProjectionMode",
    "RewardModeConfig",
    "Route2Config",
    "Route2Mask",
    "Space",
    "TeacherConfig",
    "TinyArch",
    "TrainConfig",
    "TrainerConfig",
    "TrustedConfig",
    "VHackConfig",
    "VSource",
    "compose_train",
    "oracle_informed",
    "register_configs",
    "teacher_per_group",
    "validate",
    "validate_organism",
]
