"""The train loop: mixed-pool Dr.GRPO with erase/route/route2 projection of the δS gradient.

One optimizer step (Trainer.train_step), each part in the module named for it:
  1. rollout.collect: P prompts; each group = G_s live student samples graded by the flawed grader + G_t cached
     teacher samples. The oracle's verdict (gt_correct, exploited) is logged only, never read by the loss.
     Grading runs in the background; step 2 waits for each group's grades when it reaches that group.
  2. loss.grpo_backward: Dr.GRPO loss, one backward per prompt, δS gradients split per source (student/teacher)
     from the same backward, so cin_s and cin_t are measured every step.
  3. optim_step.optimizer_step: projection (projection.knob_step) in grad space or on AdamW's update, clip, step.
     Steps 2-3 repeat trainer.updates_per_batch (mu) times on the same batch with the sampling policy's log-probs.
  4. refresh of v_hack (vhack.refreshed_v_hack), then the metrics row (summary.metrics_row).
Around the steps: deploy_eval (deployment eval), trainer_state (checkpoint/resume), summary (summary.json, BLUF).
"""

from __future__ import annotations

import logging
import os
import random
import time
from pathlib import Path

import torch
from omegaconf import DictConfig
from tqdm import tqdm

from projected_grpo import checkpoint, deploy_eval, interventions, rollout, snapshots, trainer_state
from projected_grpo import evaluate as eval_mod
from projected_grpo.adapter import adapter_modules, deployed
from projected_grpo.atomic import write_json
from projected_grpo.config import InterventionKind, ProjectionMode, Space, oracle_informed, teacher_per_group
from projected_grpo.drift import DriftTracker
from projected_grpo.env.grader import Grader
from projected_grpo.env.problems import assign_modes
from projected_grpo.grpo import denominator
from projected_grpo.loss import grpo_backward
from projected_grpo.optim_step import make_optimizer, optimizer_step
from projected_grpo.projection import basis_overlap, grad_norm
from projected_grpo.rollout import Rollout
from projected_grpo.route2 import Route2
from projected_grpo.setup import Setup, build_setup, record_run_files, run_dir, summary_lines, write_status
from projected_grpo.summary import bluf, make_summary, metrics_row, postfix, read_rows, update_means
from projected_grpo.teacher_pool import build_pool
from projected_grpo.tokens import prompt_ids
from projected_grpo.tracking import Tracker
from projected_grpo.trusted import trusted_subspace
from projected_grpo.vhack import refreshed_v_hack

log = logging.getLogger(__name__)
CALIBRATION_SEED_OFFSET = 7919  # the probe calibration generator: seed + this, never the training generator's seed


def run(cfg: DictConfig) -> float | None:
    out = run_dir()
    resume = checkpoint.preflight(cfg, out)  # a refused resume raises here, before anything is written
    record_run_files(cfg, out)
    write_status(out, "running", pid=os.getpid())
    try:
        result = _run(cfg, out, resume)
    except BaseException as e:
        write_status(out, "failed", error=f"{type(e).__name__}: {e}")
        raise
    write_status(out, "done")
    return result


def _run(cfg: DictConfig, out: Path, resume: dict | None = None) -> float | None:
    torch.manual_seed(cfg.trainer.seed)
    if cfg.trainer.torch_threads:
        torch.set_num_threads(cfg.trainer.torch_threads)
    s = build_setup(cfg, out)
    for line in summary_lines(s, cfg):
        print(line)
    if cfg.trainer.steps == 0:
        return None
    trainer = Trainer(cfg, s, resume)
    try:
        summary = trainer.train()
    except BaseException:
        trainer.close(exit_code=1)
        raise
    trainer.close()
    return summary["last5"]["hack_s"]


class Trainer:
    """One run's training state (model + knobs, AdamW, RNGs, v_hack, route2, grader, teacher pool) and its step."""

    def __init__(self, cfg: DictConfig, s: Setup, resume: dict | None = None):
        """resume: the state from checkpoint.preflight (run() validates it before writing anything);
        None: preflight here (a fresh run, or a checkpoint already in s.run_dir)."""
        self.cfg, self.s, self.t = cfg, s, cfg.trainer
        self.model, self.tok = s.model, s.tokenizer
        self.modules = adapter_modules(self.model)
        self.device = next(self.model.parameters()).device
        self.train_problems = [p for p in s.problems if p.split == "train"]
        # deployment eval: held-out and train prompts, the same number per mode (evaluate.py), under
        # reward_mode.eval_modes when set (reward_mode=none: the loophole prompts every other arm is evaluated on)
        em = list(cfg.reward_mode.eval_modes or cfg.reward_mode.modes)
        self.eval_sets, self.eval_notes = eval_mod.eval_sets(assign_modes(s.problems, em), em,
                                                             self.t.eval_prompts_per_mode)  # fmt: skip
        for note in self.eval_notes.values():
            log.warning(f"deployment eval: {note}")
        if self.t.grad_checkpointing:  # decoder layers recomputed in the backward (non-reentrant: knobs get grads)
            if not getattr(self.model, "supports_gradient_checkpointing", False):
                raise ValueError(f"trainer.grad_checkpointing=true but {type(self.model).__name__} does not support it")
            self.model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        self.n_teacher = teacher_per_group(cfg)
        self.n_student = self.t.group - self.n_teacher
        self.denom = denominator(self.t.group, self.t.max_new_tokens, self.t.prompts_per_step)
        if cfg.projection.mode == ProjectionMode.route and cfg.projection.space == Space.grad:
            log.warning("projection=route with projection.space=grad: the original method's variant; AdamW "
                        "normalises the routed remainder into full-size δS_hack steps that drift hack-ward even "
                        "without hack signal (route's default is projection.space=update)")  # fmt: skip
        self.grader = Grader(cfg.env.n_workers, cfg.env.time_floor_s, cfg.env.time_factor)
        self.pool = (build_pool(self.train_problems, cfg.teacher, self.grader, s.cache_dir / "teacher_pool")
                     if self.n_teacher > 0 else None)  # fmt: skip
        self.v = dict(s.v_hack.v)
        self.route2 = None  # projection=route2: quarantine LoRA + mask (route2/)
        if cfg.projection.mode == ProjectionMode.route2:
            self.route2 = Route2(cfg.projection.route2, cfg.vhack, self.model, self.tok, s.problems)
        # projection=trusted: the clean warm-up's subspace (knobs restored to 0 after it); before AdamW exists
        self.trusted = trusted_subspace(cfg, self.model, self.tok, s.problems) \
            if cfg.projection.mode == ProjectionMode.trusted else None
        iv = cfg.intervention  # monitor interventions (interventions.py); the probe is trained here
        self.monitor = None if iv.kind == InterventionKind.none else \
            interventions.Monitor(iv, cfg.vhack, self.model, self.tok, s.problems, iv.monitor.seed,
                                  self.calibration_sampler(iv.monitor.seed))
        self.oracle_informed = oracle_informed(cfg)
        self.drift, self.drift_cc = DriftTracker(self.t.drift_window, self.t.drift_k), None
        self.opt, self.sched = make_optimizer(self.modules, self.t, self.route2)
        self.rng = random.Random(self.t.seed)
        self.gen = torch.Generator(device=self.device).manual_seed(self.t.seed)
        self.step = 0
        self.basis_overlap = None
        self.deploy_evals: list[dict] = []
        trainer_state.restore(self, resume if resume is not None else checkpoint.preflight(cfg, s.run_dir))
        self.tracker = Tracker(cfg, s.run_dir, resume_step=self.step)

    def close(self, exit_code: int = 0) -> None:
        self.grader.close()
        self.tracker.finish(exit_code)

    # -- one step: the method ------------------------------------------------------------------------

    def train_step(self) -> dict:
        timing: dict = {}
        t_step = time.perf_counter()
        self.model.train()
        rollouts = self.rollouts(timing)  # students sampled + graded, teacher samples mixed in
        if self.monitor is not None:  # a monitor flags graded samples (ground truth reads the oracle's label), so
            for r in rollouts:  # its arms wait for every group's grades here: no grading overlap for them
                r.ready()
        interventions.apply(self.monitor, rollouts, self.step)  # the monitor's flags (all False without one)
        t0 = time.perf_counter()
        lr = self.sched.get_last_lr()[0]
        knobs0 = {n: m.delta_s.detach().clone() for n, m in self.modules.items()}
        bs, projs = [], []
        for _ in range(self.t.updates_per_batch):  # mu updates on one batch, old log-probs = the sampling policy's
            bs.append(self.backward(rollouts, bs[0]["old_logps"] if bs else None))  # Dr.GRPO, per-source δS grads
            projs.append(self.optimizer_step(bs[-1]))  # projection + clip + AdamW
        b, proj = update_means(self.v, bs, projs)
        wait = sum(r.ready().wait_s for r in rollouts)  # grading the backward waited for (overlap: rollout.py)
        timing["sec_grading"] = timing.get("sec_grading", 0.0) + wait
        self.drift_cc = self.drift.add({n: m.delta_s.detach() - knobs0[n] for n, m in self.modules.items()})
        timing["sec_backward"] = time.perf_counter() - t0 - proj["sec_projection"] - wait  # backward(s) + AdamW steps
        self.sched.step()
        self.step += 1
        if self.cfg.vhack.refresh_every and self.step % self.cfg.vhack.refresh_every == 0:
            self.refresh()  # v_hack re-extracted from the current model
        timing["sec_step"] = time.perf_counter() - t_step
        return self.metrics_row(rollouts, b, proj, lr, timing)  # metrics.jsonl row

    # -- the parts, bound to this trainer's state ---------------------------------------------------

    def prompt_ids(self, problem, mode=None) -> list[int]:
        return prompt_ids(self.tok, problem, mode)

    def calibration_sampler(self, seed: int):
        """The probe's calibration draw: trainer.group samples per prompt from the current (base) policy, in chunks of
        trainer.prompts_per_step prompts (a training step's memory), with its own generator, seeded apart from the
        training generator (the same seed would replay step 0's random numbers), so the training samples stay those
        of a run without a monitor."""
        gen = torch.Generator(device=self.device).manual_seed(seed + CALIBRATION_SEED_OFFSET)
        chunk = self.t.prompts_per_step
        return lambda prompts: [c for i in range(0, len(prompts), chunk)
                                for c in self.generate(prompts[i : i + chunk], self.t.group, gen)]  # fmt: skip

    def generate(self, prompts: list[list[int]], n: int, generator: torch.Generator) -> list[list[int]]:
        return rollout.generate(self.model, self.tok, prompts, n, self.t, generator)

    def rollouts(self, timing: dict) -> list[Rollout]:
        """The step's rollouts; student grading runs in the background (Rollout.ready() waits for a group)."""
        return rollout.collect(self.model, self.tok, self.t, self.train_problems, self.n_student, self.n_teacher,
                               self.pool, self.grader, self.rng, self.gen, timing, overlap=True,
                               inoculation=self.cfg.intervention.inoculation)  # fmt: skip

    def backward(self, rollouts: list[Rollout], old_logps: list | None = None) -> dict:
        return grpo_backward(self.model, self.modules, self.opt, rollouts, self.t, self.denom, self.tok.pad_token_id,
                             self.route2, old_logps, self.cfg.intervention)  # fmt: skip

    def grad_norm(self) -> float:
        return grad_norm([p for g in self.opt.param_groups for p in g["params"]])

    def optimizer_step(self, b: dict | None = None) -> dict:
        return optimizer_step(self.modules, self.v, self.cfg.projection, self.opt, self.t.grad_clip, self.route2, b,
                              self.trusted)  # fmt: skip

    def metrics_row(self, rollouts, b, proj, lr, timing) -> dict:
        extra = {**interventions.monitor_metrics(rollouts), "drift_cc": self.drift_cc,
                 "oracle_informed": self.oracle_informed}  # fmt: skip
        return metrics_row(self.step, rollouts, b, proj, lr, timing, self.v, self.basis_overlap,
                           self.grader.take_grade_errors(), self.route2.metrics() if self.route2 is not None else {},
                           extra)  # fmt: skip

    def refresh(self) -> None:
        """Re-extract v_hack from the current model with the quarantine ablated; same k slicing and floor."""
        vc = self.cfg.vhack
        old = self.v
        with deployed(self.model):
            self.v = refreshed_v_hack(self.cfg, self.model, self.tok, self.s.problems)
        if self.route2 is not None:  # route2's mask too, quarantine ablated; logs mask_overlap
            self.route2.refresh()
        self.basis_overlap = basis_overlap(old, self.v)
        if self.basis_overlap is not None and self.basis_overlap < 0.2:
            log.warning(f"v_hack refresh at step {self.step}: basis_overlap={self.basis_overlap:.3f} < 0.2 "
                        f"(the hack basis moved a lot since the last refresh; refresh_every={vc.refresh_every})")  # fmt: skip

    def evaluate(self, problems: list, tag: str) -> dict:
        return deploy_eval.evaluate(self, problems, tag)

    def deploy_eval(self) -> dict:
        return deploy_eval.deploy_eval(self)

    @property
    def ckpt_path(self) -> Path:
        return self.s.run_dir / checkpoint.CKPT_NAME

    def save_checkpoint(self) -> None:
        trainer_state.save(self)

    # -- the loop ------------------------------------------------------------------------------------

    def train(self) -> dict:
        t_start = time.perf_counter()
        rows = read_rows(self.tracker.path)
        bar = tqdm(total=self.t.steps, initial=self.step, desc="train", dynamic_ncols=True)
        snapshots.maybe_save(self.s.run_dir, self.step, self.t.snapshot_every, self.modules)  # step 0 (knob snapshots)
        while self.step < self.t.steps:
            row = self.train_step()
            snapshots.maybe_save(self.s.run_dir, self.step, self.t.snapshot_every, self.modules)
            self.tracker.log(row)
            rows.append(row)
            bar.update(1)
            bar.set_postfix_str(postfix(row))
            route = self.cfg.projection.mode in (ProjectionMode.route, ProjectionMode.route2)
            if route and self.t.eval_every and self.step % self.t.eval_every == 0 and self.step < self.t.steps:
                self.deploy_eval()
            if self.t.ckpt_every and self.step % self.t.ckpt_every == 0:
                self.save_checkpoint()
        bar.close()
        snapshots.maybe_save(self.s.run_dir, self.step, self.t.snapshot_every, self.modules, final=True)
        final = self.deploy_eval()
        self.save_checkpoint()
        summary = make_summary(rows, final, self.cfg, time.perf_counter() - t_start, self.s.data.counts(),
                               self.monitor.probe_info if self.monitor is not None else None)
        write_json(self.s.run_dir / "summary.json", summary, indent=2, default=str)
        self.tracker.summary(summary)
        print(bluf(summary))
        return summary


__all__ = ["Trainer", "run"]
