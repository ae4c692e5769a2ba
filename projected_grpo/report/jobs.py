"""The report's inputs: job dirs (status, summary, metrics, overrides) loaded into Jobs, and their arm labels and
rows (an arm = projection mode + v_hack source + every config value that differs between jobs, seed excepted)."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from projected_grpo.modes import MODES, Mode

JOB_FILES = ("status.json", "summary.json", "metrics.jsonl")
# Config keys that never define an arm (bookkeeping, or the seed itself).
IGNORED = ("trainer.seed", "trainer.resume", "logger.", "paths.", "vhack.path", "env.n_workers", "model.device",
           "vhack.seed", "projection.route2.seed", "intervention.monitor.seed")  # the control seeds follow trainer.seed: counted as "bases"
SEEDED_SOURCES = ("random", "shuffled")  # v_hack sources whose basis depends on vhack.seed
# Keys already named by the arm's base label.
BASE_KEYS = ("projection.mode", "vhack.source", "projection.route2.mask", "intervention.kind", "intervention.monitor.name",
             "intervention.monitor.accuracy", "intervention.inoculation")  # fmt: skip
# reward_mode keys: named by the base (no_loophole) when the other jobs share one reward mode (assign_labels)
REWARD_KEYS = ("reward_mode.name", "reward_mode.modes", "reward_mode.eval_modes")
MONITOR_SHORT = {"ground_truth": "gt", "noisy_ground_truth": "noisy", "probe": "probe"}
VANILLA = "vanilla"
GRADE_ERROR_FRAC = 0.05  # a job whose grader failed on more of its samples than this is reported, not averaged


@dataclass
class Job:
    path: Path
    root: Path
    status: str  # done | failed | running | incomplete | invalid (grader failures)
    error: str | None = None
    summary: dict | None = None
    metrics: list[dict] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)
    flat: dict = field(default_factory=dict)  # flattened resolved config (done jobs)
    label: str = ""
    context: tuple = ()

    @property
    def name(self) -> str:
        return str(self.path.relative_to(self.root)) if self.path != self.root else self.path.name

    @property
    def seed(self) -> int:
        return int(self.summary["seed"])

    @property
    def base(self) -> str:
        """The conf/arm name: the projection part, then the intervention parts (`+`-joined when combined);
        no_loophole for reward_mode=none (issue 21's arms: probe_screening, noisy70_screening, trusted, ...)."""
        if "hidden_tests" in self.flat.get("reward_mode.modes", ()):
            return "no_loophole"
        f = self.flat
        parts = [] if f["projection.mode"] == "none" else [self.projection_base]
        kind = f.get("intervention.kind", "none")
        if kind != "none":
            mon = MONITOR_SHORT.get(f["intervention.monitor.name"], f["intervention.monitor.name"])
            acc = f.get("intervention.monitor.accuracy", 1.0)
            parts.append(f"{mon}{round(100 * acc) if mon == 'noisy' else ''}_{kind}")
        if f.get("intervention.inoculation") is not None:
            parts.append("inoculation")
        return "+".join(parts) or VANILLA

    @property
    def projection_base(self) -> str:
        mode = self.flat["projection.mode"]
        if mode == "route2":  # the conf/arm name: route2_grad | route2_act (+ vhack.source when not real)
            src = self.flat["vhack.source"]
            return f"route2_{self.flat.get('projection.route2.mask')}" + ("" if src == "real" else f"_{src}")
        if mode == "trusted":
            return "trusted"
        return VANILLA if mode == "none" else f"{mode}_{self.flat['vhack.source']}"


# -- loading ---------------------------------------------------------------------------------------


def find_job_dirs(root: Path) -> list[Path]:
    dirs = {p.parent for name in JOB_FILES for p in root.rglob(name)}
    return sorted(d for d in dirs if ".hydra" not in d.parts)


def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def read_metrics(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_overrides(job_dir: Path) -> list[str]:
    path = job_dir / ".hydra" / "overrides.yaml"
    if not path.exists():
        return []
    from omegaconf import OmegaConf

    return [str(o) for o in OmegaConf.load(path)]


def load_job(job_dir: Path, root: Path) -> Job:
    status = read_json(job_dir / "status.json") or {}
    summary = read_json(job_dir / "summary.json")
    job = Job(job_dir, root, "done", summary=summary, metrics=read_metrics(job_dir / "metrics.jsonl"))
    job.overrides = read_overrides(job_dir)
    if status.get("status") == "failed":
        job.status, job.error = "failed", status.get("error") or "(no error text in status.json)"
    elif summary is None or status.get("status") == "running":
        job.status = "running" if status.get("status") == "running" else "incomplete"
        job.error = f"status.json says {status.get('status')!r}" if status else "no status.json"
        job.error += "; summary.json is stale (resumed run?)" if summary else "; no summary.json yet"
    else:
        job.flat = flatten(summary["config"])
        errors = grader_failures(job)
        if errors:  # e.g. a sandbox changed under a running sweep: its rewards say nothing about the policy
            job.status, job.error = "invalid", errors
    return job


def grader_failures(job: Job) -> str | None:
    """Why a finished job's rewards cannot be trusted: grader-side failures (metrics' grade_errors) on more than
    GRADE_ERROR_FRAC of its graded samples; None when they are rare or absent."""
    counts: dict[str, int] = defaultdict(int)
    for row in job.metrics:
        for reason, n in (row.get("grade_errors") or {}).items():
            counts[reason] += n
    t = job.flat
    graded = max(1, len(job.metrics) * t["trainer.prompts_per_step"] * t["trainer.group"])
    if sum(counts.values()) <= GRADE_ERROR_FRAC * graded:
        return None
    return f"grader-side failures on {sum(counts.values())} of ~{graded} graded samples: {dict(counts)}"


def load_jobs(roots: list[Path]) -> list[Job]:
    for root in roots:
        if not root.is_dir():
            raise SystemExit(f"report: sweep dir {root} does not exist; pass the dir Hydra printed for the multirun")
    jobs = [load_job(d, root) for root in roots for d in find_job_dirs(root)]
    if not jobs:
        raise SystemExit(f"report: no job dirs (a dir with one of {JOB_FILES}) under {[str(r) for r in roots]}")
    return jobs


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = hashable(v)
    return out


def hashable(v):
    """Lists of scalars become tuples (kept readable in labels); anything else nested becomes JSON text."""
    if isinstance(v, list):
        return tuple(v) if all(isinstance(x, (str, int, float, bool)) or x is None for x in v) else json.dumps(v)
    return v


# -- arms and pairing --------------------------------------------------------------------------------


def fill_added_keys(done: list[Job]) -> list[str]:
    """Config keys a later schema added, set to the current schema default in every job that has them: the jobs
    without them are read as that default (one arm, not two), and the keys are returned for the report's header.
    A key set to anything else keeps splitting arms (tables.drift_note)."""
    if not done:
        return []
    partial = {k for j in done for k in j.flat} - set.intersection(*(set(j.flat) for j in done))
    defaults = default_config() if partial else {}
    filled = sorted(k for k in partial if k in defaults and all(j.flat[k] == defaults[k] for j in done if k in j.flat))
    for j in done:
        for k in filled:
            j.flat.setdefault(k, defaults[k])
    return filled


def default_config() -> dict:
    """The flattened config a plain `python train.py` composes today (the current defaults of every key)."""
    from omegaconf import OmegaConf

    from projected_grpo.config import compose_train

    cfg = compose_train()
    return flatten(OmegaConf.to_container(cfg, resolve=False, enum_to_str=True))


def is_ignored(key: str) -> bool:
    return any(key == p or (p.endswith(".") and key.startswith(p)) for p in IGNORED)


def varying_keys(jobs: list[Job]) -> list[str]:
    keys = sorted({k for j in jobs for k in j.flat})
    return [k for k in keys if not is_ignored(k) and k not in BASE_KEYS and len({j.flat.get(k) for j in jobs}) > 1]


def mode_codes(modes) -> str:
    codes = [MODES[Mode(m)].code for m in modes]
    return "+".join(codes) if codes else "none"


def heldout_modes(flat: dict) -> list[str]:
    """Modes the student trains on (reward_mode.modes) that v_hack was not extracted from."""
    return [m for m in flat["reward_mode.modes"] if m not in flat["vhack.modes"]]


def label_part(job: Job, key: str) -> str | None:
    if key not in job.flat:
        return None  # key absent from this job's config (older schema): flagged in the report header
    value = job.flat[key]
    if key == "vhack.modes":
        return f"heldout={mode_codes(heldout_modes(job.flat))}"
    if key == "teacher.modes" and value == job.flat.get("vhack.modes"):
        return None  # same list as vhack.modes: already named by heldout=
    if isinstance(value, tuple):
        return f"{key}={mode_codes(value) if key.endswith('modes') else ','.join(map(str, value))}"
    return f"{key}={value}"


def context_key(job: Job) -> tuple:
    """What vanilla must share with an arm to pair with it: all but seed and projection/v_hack knobs."""
    return tuple(sorted((k, v) for k, v in job.flat.items() if is_context(k)))


def is_context(key: str) -> bool:
    return not is_ignored(key) and (key == "vhack.modes" or not key.startswith(("projection.", "vhack.", "intervention.")))


def assign_labels(done: list[Job]) -> None:
    keys = varying_keys(done)
    if len({j.flat.get("reward_mode.name") for j in done if j.base != "no_loophole"}) <= 1:
        keys = [k for k in keys if k not in REWARD_KEYS]  # only the no_loophole base differs: named by it
    # a key that never varies among the jobs of one base is that arm's own setting (route's projection.space=update):
    # named by the base; a key swept within a base (vhack.k=1,5,12) stays in the label
    by_base = defaultdict(set)
    for job in done:
        by_base[job.base].add(tuple(job.flat.get(k) for k in keys))
    keys = [k for i, k in enumerate(keys) if any(len({v[i] for v in vals}) > 1 for vals in by_base.values())]
    for job in done:
        parts = [p for p in (label_part(job, k) for k in keys) if p]
        job.label = " ".join([job.base, *parts])
        job.context = context_key(job)


def group_rows(done: list[Job]) -> dict[str, list[Job]]:
    rows = defaultdict(list)
    for job in sorted(done, key=lambda j: (j.base != VANILLA, j.label, j.seed)):
        rows[job.label].append(job)
    return dict(rows)


def vanilla_for(row: list[Job], done: list[Job]) -> list[Job]:
    return [j for j in done if j.base == VANILLA and j.context == row[0].context]


# -- statistics ------------------------------------------------------------------------------------
