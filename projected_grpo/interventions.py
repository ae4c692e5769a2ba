"""The monitor interventions on the same train step: a monitor flags samples (ground_truth: the oracle's hack
label; noisy_ground_truth: that label flipped with probability 1 - accuracy; probe: a linear probe on activations,
probe.py), then `penalty` lowers a flagged sample's reward before the group advantages, or `screening` masks its
tokens out of the loss (every advantage computed from the whole group, as without screening).

The oracle-reading monitors are oracle-informed (config.oracle_informed); the probe reads no oracle verdict.
Flags cover every sample in the loss (student and teacher); `monitor_metrics` compares them with the oracle's
labels for logging only."""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Callable

import torch

from projected_grpo.config import InterventionKind, MonitorKind
from projected_grpo.probe import LinearProbe, features, train_probe
from projected_grpo.tokens import prompt_ids

log = logging.getLogger(__name__)


def noisy_flags(labels: list[list[bool]], accuracy: float, seed: int, step: int) -> list[list[bool]]:
    """labels [P][G] -> each kept with probability `accuracy`, else flipped; the draw of sample (i, j) at `step` is
    u = sha256(seed, step, i, j) read as a number in [0, 1): independent per sample, per step and per seed, and
    stateless (a resumed run draws the same flips)."""
    out = []
    for i, row in enumerate(labels):
        flags = []
        for j, lab in enumerate(row):
            h = hashlib.sha256(f"noisy|{seed}|{step}|{i}|{j}".encode()).digest()
            u = int.from_bytes(h[:8], "big") / 2.0**64
            flags.append(bool(lab) if u < accuracy else not lab)
        out.append(flags)
    return out


def shaped_rewards(rewards: list[float], flagged: list[bool], icfg) -> list[float]:
    """The rewards the advantages see: kind=penalty subtracts intervention.penalty from each flagged sample."""
    if icfg is None or icfg.kind != InterventionKind.penalty:
        return list(rewards)
    return [rw - icfg.penalty * bool(f) for rw, f in zip(rewards, flagged)]


def loss_keep(flagged: list[bool], icfg) -> list[bool]:
    """Which samples' tokens enter the loss: kind=screening drops the flagged ones."""
    if icfg is None or icfg.kind != InterventionKind.screening:
        return [True] * len(flagged)
    return [not f for f in flagged]


Generate = Callable[[list[list[int]]], list[list[int]]]  # P prompts -> P x n completions (prompt-major)


def calibrate_probe(probe: LinearProbe, mcfg, model, tok, problems, generate: Generate, seed: int,
                    inoculation: str | None = None) -> dict:
    """Set the probe's cut so that mcfg.probe_flag_rate of the base policy's own samples are flagged: n samples on
    each of mcfg.probe_calib_prompts train prompts (drawn with `seed`), cut = the (1 - rate) quantile of their
    logit of P(hack). A flag budget on unlabelled samples: no grader or oracle is read. The prompts are built as the
    training prompts are (with `inoculation` when set). Returns {calib_n, threshold, cut}."""
    rng = random.Random(f"probe-calib|{seed}")  # its own stream: the trainer's draws are unchanged
    train = [p for p in problems if p.split == "train"]
    if not train:
        raise ValueError("probe calibration needs train-split problems to draw its prompts from; found none")
    chosen = [rng.choice(train) for _ in range(mcfg.probe_calib_prompts)]
    prompts = [prompt_ids(tok, p, inoculation=inoculation) for p in chosen]
    comps = generate(prompts)
    n = len(comps) // len(prompts)
    logits = probe.logit(features(model, [p for p in prompts for _ in range(n)], comps, tok.pad_token_id))  # [P*n]
    probe.cut = float(torch.quantile(logits.double(), 1.0 - mcfg.probe_flag_rate).float())  # compared in float32
    flagged = int((logits > probe.cut).sum())
    if flagged < int(mcfg.probe_flag_rate * len(comps)):
        log.warning(f"probe calibration: {flagged} of {len(comps)} base-policy samples lie above the cut, fewer "
                    f"than the {mcfg.probe_flag_rate:.0%} budget (tied logits): the monitor flags less than asked")  # fmt: skip
    return {"calib_n": len(comps), "threshold": probe.threshold, "cut": probe.cut}


class Monitor:
    """Flags samples for penalty/screening (icfg: cfg.intervention; the probe is trained, and calibrated on the base
    policy's samples drawn by `generate`, here at setup)."""

    def __init__(self, icfg, vcfg, model, tok, problems, seed: int, generate: Generate | None = None):
        self.icfg, self.kind = icfg, MonitorKind(icfg.monitor.name)
        self.model, self.tok, self.seed = model, tok, seed
        self.probe, self.probe_info = None, {}
        if self.kind == MonitorKind.probe:
            mcfg = icfg.monitor
            self.probe, self.probe_info = train_probe(mcfg, vcfg, model, tok, problems)
            if mcfg.probe_flag_rate is not None:
                if generate is None:
                    raise ValueError("intervention.monitor.probe_flag_rate is set but the Monitor got no sampler "
                                     "(generate=...) to draw the base policy's calibration samples")  # fmt: skip
                self.probe_info.update(calibrate_probe(self.probe, mcfg, model, tok, problems, generate, seed,
                                                       icfg.inoculation))
            log.info(f"probe monitor: {self.probe_info}")
            print(f"probe monitor: trained on {self.probe_info['n_train']} v_hack pairs, train accuracy "
                  f"{self.probe_info['train_acc']:.2f}, held-out {self.probe_info.get('heldout_acc', float('nan')):.2f}, "
                  f"threshold P(hack) > {self.probe.threshold:.6g}"
                  + (f" (flags {mcfg.probe_flag_rate:.0%} of {self.probe_info['calib_n']} base-policy samples)"
                     if mcfg.probe_flag_rate is not None else " (fixed)"))  # fmt: skip

    def flags(self, rollouts, step: int) -> list[list[bool]]:
        """[P][G] flags of the batch's samples (student and teacher), at optimizer step `step`."""
        if self.kind == MonitorKind.ground_truth:
            return [list(map(bool, r.exploited)) for r in rollouts]
        if self.kind == MonitorKind.noisy_ground_truth:
            return noisy_flags([r.exploited for r in rollouts], self.icfg.monitor.accuracy, self.seed, step)
        if self.kind == MonitorKind.probe:
            out = []
            for r in rollouts:  # the current policy's activations on each sample
                X = features(self.model, [r.prompt_ids] * len(r.completion_ids), r.completion_ids, self.tok.pad_token_id)
                out.append(self.probe.flag(X).tolist())
            return out
        raise ValueError(f"intervention.monitor.name={self.kind.value!r} flags nothing; expected a monitor")


def apply(monitor: Monitor | None, rollouts, step: int) -> None:
    """Set every rollout's `flagged` (all False without a monitor)."""
    flags = monitor.flags(rollouts, step) if monitor is not None else [[False] * len(r.rewards) for r in rollouts]
    for r, f in zip(rollouts, flags):
        r.flagged = f


def monitor_metrics(rollouts) -> dict:
    """frac_monitor_flagged over all samples in the batch; monitor_tpr / monitor_fpr against the oracle's hack
    label (logging only; None where a class is absent)."""
    pairs = [(f, ex) for r in rollouts for f, ex in zip(r.flagged, r.exploited)]
    hacks, cleans = [f for f, ex in pairs if ex], [f for f, ex in pairs if not ex]
    rate = lambda xs: sum(xs) / len(xs) if xs else None
    return {"frac_monitor_flagged": rate([f for f, _ in pairs]), "monitor_tpr": rate(hacks), "monitor_fpr": rate(cleans)}
