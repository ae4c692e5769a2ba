"""The train loop: mixed-pool Dr.GRPO with erase/route projection of the δS gradient.

Per optimizer step:
  1. P prompts; each group = G_s live student samples (folded fast sampler) + G_t cached teacher samples.
  2. Student completions are graded by the flawed grader; teacher rewards come from the pool.
     The oracle's verdict (gt_correct, exploited) is logged only, never read by the loss (no-cheat rule).
  3. Dr.GRPO loss, one backward per prompt; δS gradients split per source (student/teacher) from the same
     backward (pergrad.grouped_grads), so cin_s and cin_t are measured every step (cin_t null without teacher
     samples in the loss).
  4. Projection (projection.knob_step) in grad space, or on AdamW's actual update (projection.space=update).
     Steps 3-4 repeat trainer.updates_per_batch (mu) times on the same batch, with the sampling policy's
     log-probs (taken at the first update) as the PPO old log-probs; projection applies at every update.
  5. Refresh of v_hack, deployment eval (held-out and train prompts, balanced per mode), checkpoint, metrics.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from projected_grpo import checkpoint, snapshots
from projected_grpo import evaluate as eval_mod
from projected_grpo import vhack as vhack_mod
from projected_grpo.adapter import adapter_modules, deployed, folded, reference_model, wrap_model
from projected_grpo.atomic import write_json, write_text
from projected_grpo.config import ProjectionMode, Space, teacher_per_group
from projected_grpo.env.grader import Grader
from projected_grpo.env.problems import load_problem_set
from projected_grpo.env.prompts import render_prompt
from projected_grpo.evaluate import EVAL_SAMPLES
from projected_grpo.grpo import advantages, denominator, token_loss_sum
from projected_grpo.model import build_model
from projected_grpo.modes import Mode
from projected_grpo.pergrad import grouped_grads
from projected_grpo.projection import basis_overlap, cin, grad_norm, knob_step
from projected_grpo.route2 import Route2
from projected_grpo.sampler import sample
from projected_grpo.tokens import completion_logprobs, encode_completion, encode_prompt, pack
from projected_grpo.tracking import PER_MODE, STEP_METRICS, TIMING, Tracker, mode_key

log = logging.getLogger(__name__)
HYDRA_SUBDIR = ".hydra"  # where record_run_files writes the job's config (report.py reads overrides.yaml)
LAST_N = 5  # summary = mean of the last N steps


# ---------------------------------------------------------------------------------------------------
# Setup


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


def run_dir() -> Path:
    return Path(HydraConfig.get().runtime.output_dir)


def build_setup(cfg: DictConfig, out_dir: Path, with_v_hack: bool = True) -> Setup:
    cache_dir = Path(cfg.paths.cache_dir).expanduser()
    data = load_problem_set(cfg.env, list(cfg.reward_mode.modes), cache_dir)  # first: a bad source fails fast
    model, tok = build_model(cfg.model, cache_dir)
    wrapped = wrap_model(model, list(cfg.model.target_suffixes), cache_dir)
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
    n_prompt = max(len(encode_prompt(s.tokenizer, render_prompt(p, p.mode))) for p in s.problems)
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


# ---------------------------------------------------------------------------------------------------
# Training


def lr_lambda(warmup: int, total: int):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return f


def mean(xs) -> float | None:
    xs = [float(x) for x in xs]
    return sum(xs) / len(xs) if xs else None


@dataclass
class Rollout:
    problem: object
    prompt_ids: list[int]
    completion_ids: list[list[int]]  # G (student first, then teacher)
    texts: list[str]
    is_teacher: list[bool]
    rewards: list[float]
    exploited: list[bool]  # logged only
    gt_correct: list[bool]  # logged only


class Trainer:
    def __init__(self, cfg: DictConfig, s: Setup, resume: dict | None = None):
        """resume: the state from checkpoint.preflight (run() validates it before writing anything);
        None: preflight here (a fresh run, or a checkpoint already in s.run_dir)."""
        self.cfg, self.s, self.t = cfg, s, cfg.trainer
        self.model, self.tok = s.model, s.tokenizer
        self.modules = adapter_modules(self.model)
        self.device = next(self.model.parameters()).device
        self.train_problems = [p for p in s.problems if p.split == "train"]
        # deployment eval: held-out and train prompts, the same number per mode (evaluate.py)
        self.eval_sets, self.eval_notes = eval_mod.eval_sets(s.problems, list(cfg.reward_mode.modes),
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
        self.pool = self._teacher_pool() if self.n_teacher > 0 else None
        self.v = dict(s.v_hack.v)
        main = [m.delta_s for m in self.modules.values()]
        hack = [m.delta_s_hack for m in self.modules.values()]
        b1, b2 = self.t.betas
        groups = [
            {"params": main, "weight_decay": self.t.weight_decay},
            {"params": hack, "weight_decay": self.t.weight_decay_hack},
        ]
        self.route2 = None  # projection=route2: quarantine LoRA + mask (route2.py)
        if cfg.projection.mode == ProjectionMode.route2:
            self.route2 = Route2(cfg.projection.route2, cfg.vhack, self.model, self.tok, s.problems)
            groups.append({"params": self.route2.parameters(), "weight_decay": self.t.weight_decay_hack})
        self.opt = torch.optim.AdamW(groups, lr=self.t.lr, betas=(b1, b2))
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lr_lambda(self.t.warmup, self.t.steps))
        self.rng = random.Random(self.t.seed)
        self.gen = torch.Generator(device=self.device).manual_seed(self.t.seed)
        self.step = 0
        self.basis_overlap = None
        self.deploy_evals: list[dict] = []
        self._maybe_resume(resume if resume is not None else checkpoint.preflight(cfg, s.run_dir))
        self.tracker = Tracker(cfg, s.run_dir, resume_step=self.step)

    def _teacher_pool(self):
        from projected_grpo.teacher_pool import build_pool

        return build_pool(self.train_problems, self.cfg.teacher, self.grader, self.s.cache_dir / "teacher_pool")

    def close(self, exit_code: int = 0) -> None:
        self.grader.close()
        self.tracker.finish(exit_code)

    # -- rollouts --------------------------------------------------------------------------------

    def prompt_ids(self, problem, mode=None) -> list[int]:
        return encode_prompt(self.tok, render_prompt(problem, mode or problem.mode))

    def generate(self, prompts: list[list[int]], n: int, generator: torch.Generator) -> list[list[int]]:
        """n samples per prompt, one batched sampler call, knobs folded into W."""
        flat = [p for p in prompts for _ in range(n)]
        if not flat:
            return []
        training = self.model.training  # sample in eval mode (HF turns the KV cache off under checkpointing)
        self.model.eval()
        try:
            with folded(self.model):
                return sample(
                    self.model, flat, self.t.max_new_tokens, self.tok.eos_token_id, self.tok.pad_token_id,
                    self.t.temperature, generator,
                )  # fmt: skip
        finally:
            self.model.train(training)

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=True)

    def rollouts(self, timing: dict) -> list[Rollout]:
        problems = [self.rng.choice(self.train_problems) for _ in range(self.t.prompts_per_step)]
        prompts = [self.prompt_ids(p) for p in problems]
        t0 = time.perf_counter()
        student = self.generate(prompts, self.n_student, self.gen)
        timing["sec_generation"] = time.perf_counter() - t0
        texts = [self.decode(c) for c in student]
        t0 = time.perf_counter()
        items = [(txt, p, p.mode) for i, p in enumerate(problems) for txt in texts[i * self.n_student : (i + 1) * self.n_student]]
        graded = self.grader.grade_batch(items)
        timing["sec_grading"] = time.perf_counter() - t0
        out = []
        for i, (p, prompt) in enumerate(zip(problems, prompts)):
            sl = slice(i * self.n_student, (i + 1) * self.n_student)
            r = Rollout(p, prompt, list(student[sl]), list(texts[sl]), [False] * self.n_student,
                        [g.reward for g in graded[sl]], [g.exploited for g in graded[sl]],
                        [g.gt_correct for g in graded[sl]])  # fmt: skip
            for ts in self.pool.sample(p.id, self.n_teacher, self.rng) if self.n_teacher else []:
                r.completion_ids.append(encode_completion(self.tok, ts.completion, self.t.max_new_tokens))
                r.texts.append(ts.completion)
                r.is_teacher.append(True)
                r.rewards.append(ts.reward)
                r.exploited.append(ts.exploited)
                r.gt_correct.append(ts.gt_correct)
            out.append(r)
        return out

    # -- loss and gradients ----------------------------------------------------------------------

    def backward(self, rollouts: list[Rollout], old_logps: list | None = None) -> dict:
        """Dr.GRPO loss, one backward per prompt; returns loss stats, per-source δS gradients (before any route2
        mask) and the old log-probs: old_logps=None (the first update of a batch, knobs as sampled) takes this
        pass's log-probs as the sampling policy's; later updates pass them back."""
        rewards = torch.tensor([r.rewards for r in rollouts])  # [P, G]
        A, zero_var = advantages(rewards)
        first = old_logps is None
        olds: list[torch.Tensor | None] = []
        teacher_in_loss = False
        loss_total = kl_total = 0.0
        self.opt.zero_grad(set_to_none=True)
        n_tokens = 0
        r2 = self.route2
        if r2 is not None:
            r2.begin_step()
        masking = r2.masking() if r2 is not None else nullcontext()  # route2 mask=act: the token mask
        with grouped_grads(self.model, groups=torch.tensor([0, 1])) as store, masking:
            for i, r in enumerate(rollouts):
                if zero_var[i]:
                    olds.append(None)
                    continue  # contributes nothing (A = 0, and beta*KL alone is not worth a backward)
                teacher_in_loss |= any(r.is_teacher)
                store.set_groups(torch.tensor(r.is_teacher), 2)  # per-source: 0 student, 1 teacher
                if r2 is not None:  # mask=grad: one more group per rollout
                    store.onehot = r2.group_columns(store.onehot, i, len(rollouts))
                ids, attn, cmask = pack([r.prompt_ids] * len(r.completion_ids), r.completion_ids, self.tok.pad_token_id)
                ids, attn, cmask = ids.to(self.device), attn.to(self.device), cmask.to(self.device)
                ref = None
                if self.t.beta > 0:  # BEFORE the policy forward: the reference context zeroes the knobs and route2's
                    # A_q/B_q in place, which must not touch tensors the policy graph saved for its backward
                    with torch.no_grad(), reference_model(self.model):
                        ref, _ = completion_logprobs(self.model, ids, attn, cmask)
                logp, mask = completion_logprobs(self.model, ids, attn, cmask)  # [G, Lc]
                old = logp.detach() if first else old_logps[i]  # the sampling policy's log-probs [G, Lc]
                olds.append(old)
                loss_g, kl_g = token_loss_sum(logp, old, A[i].to(logp), mask, self.t.clip_eps, self.t.beta, ref)
                loss = loss_g.sum() / self.denom
                if r2 is not None:  # act flag counts (oracle labels: logging only) and the quarantine's L1
                    r2.record(cmask, r.is_teacher, r.exploited)
                    loss = loss + r2.l1_penalty(cmask) / self.t.prompts_per_step
                loss.backward()
                loss_total += float(loss.detach())
                kl_total += float(kl_g.sum())
                n_tokens += int(cmask.sum())
        zeros = {n: torch.zeros(m.r, device=self.device) for n, m in self.modules.items()}
        g_s = {n: store.grads[n][0] if n in store.grads else zeros[n] for n in self.modules}
        g_t = {n: store.grads[n][1] if n in store.grads else zeros[n] for n in self.modules}
        for m in self.modules.values():  # a step with only zero-variance groups has no graph at all
            if m.delta_s.grad is None:
                m.delta_s.grad = torch.zeros_like(m.delta_s)
        if r2 is not None:  # mask=grad: the per-rollout δS gradients
            r2.after_backward(store.grads, rollouts)
        return {
            "loss": loss_total,
            "kl": kl_total / max(1, n_tokens),
            "frac_zero_var": float(zero_var.float().mean()),
            "g_s": g_s,  # name -> [r], the student samples' δS gradient (before a route2 act mask)
            "g_t": g_t,  # name -> [r], the teacher samples'
            "teacher_in_loss": teacher_in_loss,  # False: cin_t is undefined (null)
            "old_logps": olds,
        }

    def grad_norm(self) -> float:
        return grad_norm([p for g in self.opt.param_groups for p in g["params"]])

    def optimizer_step(self, b: dict | None = None) -> dict:
        """Project (grad or update space), clip, step (projection.knob_step). Returns projection metrics.
        route2: cin is measured before the mask (on b's per-source gradients, which the act mask does not
        touch); the grad mask withholds after the measurement, and cout measures what is left."""
        r2 = self.route2
        g_pre = None
        if r2 is not None and b is not None:
            g_pre = {n: b["g_s"][n] + b["g_t"][n] for n in self.modules}
        withhold = (lambda: r2.withhold(self.modules)) if r2 is not None else None
        return knob_step(self.modules, self.v, self.cfg.projection, self.opt, self.t.grad_clip, g_pre, withhold)

    # -- one step --------------------------------------------------------------------------------

    def train_step(self) -> dict:
        timing: dict = {}
        t_step = time.perf_counter()
        self.model.train()
        rollouts = self.rollouts(timing)
        t0 = time.perf_counter()
        lr = self.sched.get_last_lr()[0]
        bs = [self.backward(rollouts)]
        projs = [self.optimizer_step(bs[0])]
        for _ in range(1, self.t.updates_per_batch):  # mu > 1: the same batch, the sampling policy's old log-probs
            bs.append(self.backward(rollouts, bs[0]["old_logps"]))
            projs.append(self.optimizer_step(bs[-1]))
        # means over the mu updates (the zero-variance groups and teacher presence are the batch's)
        proj = {k: sum(p[k] for p in projs) if k == "sec_projection" else mean(p[k] for p in projs) for k in projs[0]}
        b = {
            "loss": mean(x["loss"] for x in bs),
            "kl": mean(x["kl"] for x in bs),
            "frac_zero_var": bs[0]["frac_zero_var"],
            "cin_s": mean(cin(self.v, x["g_s"]) for x in bs),
            "cin_t": mean(cin_of_teacher(self.v, x) for x in bs) if bs[0]["teacher_in_loss"] else None,
        }
        timing["sec_backward"] = time.perf_counter() - t0 - proj["sec_projection"]  # backward(s) + AdamW steps
        self.sched.step()
        self.step += 1
        if self.cfg.vhack.refresh_every and self.step % self.cfg.vhack.refresh_every == 0:
            self.refresh()
        timing["sec_step"] = time.perf_counter() - t_step
        row = self.metrics_row(rollouts, b, proj, lr, timing)
        return row

    def metrics_row(self, rollouts, b, proj, lr, timing) -> dict:
        stu = [(r.problem.mode, rw, ex, gt) for r in rollouts for rw, ex, gt, te in
               zip(r.rewards, r.exploited, r.gt_correct, r.is_teacher) if not te]  # fmt: skip
        tea = [(rw, ex, gt) for r in rollouts for rw, ex, gt, te in zip(r.rewards, r.exploited, r.gt_correct, r.is_teacher) if te]
        row = {
            "step": self.step,
            "reward": mean([rw for r in rollouts for rw in r.rewards]),
            "reward_s": mean(x[1] for x in stu),
            "reward_t": mean(x[0] for x in tea),
            "hack_s": mean(x[2] for x in stu),
            "hack_t": mean(x[1] for x in tea),
            "solve_s": mean(x[3] for x in stu),
            "solve_t": mean(x[2] for x in tea),
            "loss": b["loss"],
            "kl": b["kl"],
            "cin_s": b["cin_s"],
            "cin_t": b["cin_t"],
            "frac_zero_var": b["frac_zero_var"],
            "basis_overlap": self.basis_overlap,
            "v_axes": sum(V.shape[0] for V in self.v.values()),
            "lr": lr,
            "grade_errors": self.grader.take_grade_errors(),
            **proj,
            **timing,
            **(self.route2.metrics() if self.route2 is not None else {}),
        }
        for mode in Mode:
            xs = [x for x in stu if x[0] == mode]
            row[mode_key("hack_s", mode)] = mean(x[2] for x in xs)
            row[mode_key("solve_s", mode)] = mean(x[3] for x in xs)
        return {k: row.get(k) for k in STEP_METRICS + PER_MODE}

    # -- refresh, eval ---------------------------------------------------------------------------

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

    @torch.no_grad()
    def evaluate(self, problems: list, tag: str) -> dict:
        """Hack and solve rates on fixed eval prompts, overall and per mode, with n and Wilson 95% intervals
        (EVAL_SAMPLES samples per prompt, fixed seed)."""
        self.model.eval()
        gen = torch.Generator(device=self.device).manual_seed(self.t.seed + 10_000)
        prompts = [self.prompt_ids(p) for p in problems]
        comps = self.generate(prompts, EVAL_SAMPLES, gen)
        items = [(self.decode(c), p, p.mode) for i, p in enumerate(problems)
                 for c in comps[i * EVAL_SAMPLES : (i + 1) * EVAL_SAMPLES]]  # fmt: skip
        graded = self.grader.grade_batch(items)
        self.tracker.table(f"samples/{tag}", ["problem", "mode", "completion", "reward", "exploited", "gt_correct"],
                           [[p.id, p.mode.value, txt, g.reward, g.exploited, g.gt_correct]
                            for (txt, p, _), g in list(zip(items, graded))[: self.cfg.logger.n_samples]])  # fmt: skip
        return eval_mod.summarize([(p.mode, g.exploited, g.gt_correct) for (_, p, _), g in zip(items, graded)])

    def deploy_eval(self) -> dict:
        """Per split (held-out, train): the model as trained (kept) and, for route/route2, with the quarantine
        ablated. A missing split carries the reason instead."""
        ev: dict = {"step": self.step, "prompts_per_mode": self.t.eval_prompts_per_mode}
        routed = self.cfg.projection.mode in (ProjectionMode.route, ProjectionMode.route2)
        for split in eval_mod.SPLITS:
            if split not in self.eval_sets:
                ev[split] = {"missing": self.eval_notes[split]}
                continue
            problems = self.eval_sets[split]
            ev[split] = {"prompts": len(problems), "kept": self.evaluate(problems, f"{split}_kept_{self.step}")}
            if split in self.eval_notes:
                ev[split]["note"] = self.eval_notes[split]
            if routed:
                with deployed(self.model):
                    ev[split]["ablated"] = self.evaluate(problems, f"{split}_ablated_{self.step}")
        self.deploy_evals.append(ev)
        with open(self.s.run_dir / "deploy_eval.jsonl", "a") as f:
            f.write(json.dumps(ev) + "\n")
        return ev

    # -- checkpoints -----------------------------------------------------------------------------

    @property
    def ckpt_path(self) -> Path:
        return self.s.run_dir / checkpoint.CKPT_NAME

    def save_checkpoint(self) -> None:
        """checkpoint.safetensors (checkpoint.py): tensors + JSON only, checksummed, written atomically."""
        state = {
            "step": self.step,
            "knobs": {n: (m.delta_s.detach().clone(), m.delta_s_hack.detach().clone()) for n, m in self.modules.items()},
            "opt": self.opt.state_dict(),
            "sched": self.sched.state_dict(),
            "rng_py": self.rng.getstate(),
            "rng_gen": self.gen.get_state(),
            "rng_torch": torch.get_rng_state(),
            "v": self.v,
            "basis_overlap": self.basis_overlap,
            "deploy_evals": self.deploy_evals,
            "route2": self.route2.state_dict() if self.route2 is not None else None,
            "config": checkpoint.config_fingerprint(self.cfg),
        }
        checkpoint.save(self.ckpt_path, state)

    def _maybe_resume(self, state: dict | None) -> None:
        """Restore the train state from a checkpoint.preflight result (None: a fresh run)."""
        if state is None:
            return
        with torch.no_grad():
            for n, m in self.modules.items():
                m.delta_s.copy_(state["knobs"][n][0])
                m.delta_s_hack.copy_(state["knobs"][n][1])
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        self.rng.setstate(state["rng_py"])
        self.gen.set_state(state["rng_gen"])
        torch.set_rng_state(state["rng_torch"])
        self.v = {n: t.to(self.device) for n, t in state["v"].items()}
        self.basis_overlap = state["basis_overlap"]
        if self.route2 is not None:
            self.route2.load_state_dict(state["route2"])
        self.deploy_evals = state["deploy_evals"]
        self.step = state["step"]
        # SLURM_RESTART_COUNT: how often SLURM requeued this job (preemption / timeout), absent outside SLURM
        msg = f"resumed from {self.ckpt_path} at step {self.step} (SLURM_RESTART_COUNT={os.environ.get('SLURM_RESTART_COUNT', '-')})"
        log.info(msg)
        print(msg)

    # -- the loop --------------------------------------------------------------------------------

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
        summary = make_summary(rows, final, self.cfg, time.perf_counter() - t_start, self.s.data.counts())
        write_json(self.s.run_dir / "summary.json", summary, indent=2, default=str)
        self.tracker.summary(summary)
        print(bluf(summary))
        return summary


def refreshed_v_hack(cfg: DictConfig, model, tok, problems) -> dict[str, torch.Tensor]:
    """Re-extract v_hack from the current model (the caller ablates the quarantine), same k slicing and floor."""
    v = cfg.vhack
    source = vhack_mod.VSource(v.source)
    file_source = vhack_mod.VSource.real if source == vhack_mod.VSource.random else source
    pairs, _ = vhack_mod.make_pairs(v, problems, file_source)
    V, S = vhack_mod.extract(model, tok, pairs, int(v.extract_top_k), float(v.tau_axis))
    vh = vhack_mod.select(V, S, int(v.k), float(v.drop_bottom_frac))
    if source == vhack_mod.VSource.random:
        vh = vhack_mod.random_control(vh, int(v.seed))
    dev = next(model.parameters()).device
    return {n: t.to(dev) for n, t in vh.v.items()}


def cin_of_teacher(v: dict[str, torch.Tensor], b: dict) -> float | None:
    """cin of the teacher samples' δS gradient; None (undefined, not 0) when no teacher sample was in the loss."""
    return cin(v, b["g_t"]) if b["teacher_in_loss"] else None


def postfix(row: dict) -> str:
    f = lambda k: "-" if row[k] is None else f"{row[k]:.2f}"
    return f"R={f('reward')} hack_s={f('hack_s')} solve_s={f('solve_s')} cin_s={f('cin_s')} cin_t={f('cin_t')}"


def read_rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x] if path.exists() else []


def make_summary(rows: list[dict], final_eval: dict, cfg: DictConfig, wall: float, problem_counts: dict) -> dict:
    last = rows[-LAST_N:]
    keys = ["hack_s", "solve_s", "hack_t", "solve_t", "reward", "cin_s", "cin_t", "cin", "cout", "cin_null", *PER_MODE]
    last5 = {k: mean(r[k] for r in last if r[k] is not None) for k in keys}
    first = rows[0] if rows else {}
    return {
        "steps": len(rows),
        "seed": cfg.trainer.seed,
        "arm": cfg.projection.mode.value,
        "vhack_source": cfg.vhack.source.value,
        "step0": {k: first.get(k) for k in ("hack_s", "solve_s")},
        # graded student completions per step: the binomial sample behind each step's hack_s/solve_s (report.py)
        "students_per_step": students_per_step(cfg),
        "last5": last5,
        "deploy": final_eval,
        "wall_seconds": wall,
        "problems": problem_counts,
        "config": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
    }


def students_per_step(cfg: DictConfig) -> int:
    return (cfg.trainer.group - teacher_per_group(cfg)) * cfg.trainer.prompts_per_step


def bluf(summary: dict) -> str:
    """A short console table: the answer first."""
    l5, dep = summary["last5"], summary["deploy"]
    fmt = lambda x: "   -" if x is None else f"{x:5.2f}"
    row = lambda label, hack, solve, extra="": f"  {label:<34s}{fmt(hack)}  {fmt(solve)}{extra}"
    lines = [
        f"BLUF  arm={summary['arm']}  v_hack={summary['vhack_source']}  seed={summary['seed']}  steps={summary['steps']}",
        f"  {'':<34s} hack  solve",
        row(f"student (last {LAST_N})", l5["hack_s"], l5["solve_s"]),
        row(f"teacher (last {LAST_N})", l5["hack_t"], l5["solve_t"]),
    ]
    for split in eval_mod.SPLITS:
        ev = dep[split]
        if "missing" in ev:
            lines.append(f"  eval {split}: MISSING ({ev['missing']})")
            continue
        for kind, name in (("kept", "as trained"), ("ablated", "quarantine off")):
            if kind in ev:
                e = ev[kind]
                n = f"  (n={e['n']}, {dep['prompts_per_mode']} prompts/mode)"
                lines.append(row(f"eval {split}, {name}", e["hack"]["rate"], e["solve"]["rate"], n))
    lines.append(f"  cin_s {fmt(l5['cin_s'])}  cin_t {fmt(l5['cin_t'])}  cout {fmt(l5['cout'])}  null {fmt(l5['cin_null'])}")
    return "\n".join(lines)


__all__ = ["TIMING", "Trainer", "build_setup", "run"]
