"""The train loop: mixed-pool Dr.GRPO with erase/route projection of the δS gradient.

Per optimizer step:
  1. P prompts; each group = G_s live student samples (folded fast sampler) + G_t cached teacher samples.
  2. Student completions are graded by the flawed grader; teacher rewards come from the pool.
     The oracle's verdict (gt_correct, exploited) is logged only, never read by the loss (no-cheat rule).
  3. Dr.GRPO loss, one backward per prompt; δS gradients split per source (student/teacher) from the same
     backward (pergrad.grouped_grads), so cin_s and cin_t are measured every step.
  4. Projection (projection.py) in grad space, or on AdamW's actual update (projection.space=update).
  5. Refresh of v_hack, deployment eval, checkpoint, metrics.
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

from projected_grpo import checkpoint
from projected_grpo import vhack as vhack_mod
from projected_grpo.adapter import adapter_modules, deployed, folded, reference_model, wrap_model
from projected_grpo.atomic import write_json, write_text
from projected_grpo.config import ProjectionMode, Space
from projected_grpo.env.grader import Grader
from projected_grpo.env.problems import load_problems
from projected_grpo.env.prompts import render_prompt
from projected_grpo.grpo import advantages, token_loss_sum
from projected_grpo.model import build_model
from projected_grpo.modes import MODES, Mode
from projected_grpo.pergrad import grouped_grads
from projected_grpo.projection import apply_to_grads, cin, project_grads
from projected_grpo.route2 import Route2
from projected_grpo.sampler import sample
from projected_grpo.tokens import completion_logprobs, encode_completion, encode_prompt, pack
from projected_grpo.tracking import PER_MODE, STEP_METRICS, TIMING, Tracker, mode_key

log = logging.getLogger(__name__)
HYDRA_SUBDIR = ".hydra"  # where record_run_files writes the job's config (report.py reads overrides.yaml)
LAST_N = 5  # summary = mean of the last N steps
EVAL_SAMPLES = 4  # samples per eval prompt


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


def run_dir() -> Path:
    return Path(HydraConfig.get().runtime.output_dir)


def build_setup(cfg: DictConfig, out_dir: Path, with_v_hack: bool = True) -> Setup:
    cache_dir = Path(cfg.paths.cache_dir).expanduser()
    model, tok = build_model(cfg.model, cache_dir)
    wrapped = wrap_model(model, list(cfg.model.target_suffixes), cache_dir)
    problems = load_problems(cfg.env, list(cfg.reward_mode.modes))
    s = Setup(model, tok, out_dir, cache_dir, wrapped, problems)
    if with_v_hack:
        s.v_hack = vhack_mod.get_v_hack(cfg, model, tok, problems, cache_dir)
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
    lines.append(f"run dir: {s.run_dir}")
    return lines


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
        heldout = [p for p in s.problems if p.split != "train"] or self.train_problems
        self.eval_problems = (heldout if self.t.eval_split == "heldout" else self.train_problems)[: self.t.n_eval_prompts]
        self.n_teacher = round(self.t.group * self.t.mix_ratio) if cfg.teacher.enabled else 0
        self.n_student = self.t.group - self.n_teacher
        self.denom = self.t.group * self.t.max_new_tokens * self.t.prompts_per_step
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
        with folded(self.model):
            return sample(
                self.model, flat, self.t.max_new_tokens, self.tok.eos_token_id, self.tok.pad_token_id,
                self.t.temperature, generator,
            )  # fmt: skip

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

    def backward(self, rollouts: list[Rollout]) -> dict:
        """Dr.GRPO loss, one backward per prompt; returns loss stats and per-source δS gradients."""
        rewards = torch.tensor([r.rewards for r in rollouts])  # [P, G]
        A, zero_var = advantages(rewards)
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
                    continue  # contributes nothing (A = 0, and beta*KL alone is not worth a backward)
                store.set_groups(torch.tensor(r.is_teacher), 2)  # per-source: 0 student, 1 teacher
                if r2 is not None:  # mask=grad: one more group per rollout
                    store.onehot = r2.group_columns(store.onehot, i, len(rollouts))
                ids, attn, cmask = pack([r.prompt_ids] * len(r.completion_ids), r.completion_ids, self.tok.pad_token_id)
                ids, attn, cmask = ids.to(self.device), attn.to(self.device), cmask.to(self.device)
                logp, mask = completion_logprobs(self.model, ids, attn, cmask)  # [G, Lc]
                ref = None
                if self.t.beta > 0:
                    with torch.no_grad(), reference_model(self.model):
                        ref, _ = completion_logprobs(self.model, ids, attn, cmask)
                loss_g, kl_g = token_loss_sum(logp, logp.detach(), A[i].to(logp), mask, self.t.clip_eps, self.t.beta, ref)
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
            "g_s": g_s,
            "g_t": g_t,
        }

    def grad_norm(self) -> float:
        gs = [p.grad for g in self.opt.param_groups for p in g["params"] if p.grad is not None]
        return float(torch.linalg.vector_norm(torch.stack([g.norm() for g in gs]))) if gs else 0.0

    def optimizer_step(self) -> dict:
        """Project (grad or update space), clip, step. Returns projection metrics."""
        pcfg = self.cfg.projection
        t0 = time.perf_counter()
        res = apply_to_grads(self.modules, self.v, pcfg) if pcfg.space == Space.grad else None
        if res is None:  # update space: measure cin on the gradient, keep the quarantine untrained by autograd
            _, res = project_grads({n: m.delta_s.grad for n, m in self.modules.items()}, self.v, pcfg, remove=False)
            for m in self.modules.values():
                m.delta_s_hack.grad = None
        if self.route2 is not None:  # cin measured above; the grad mask withholds, cout measures what is left
            self.route2.withhold(self.modules)
            res.cout = cin(self.v, {n: m.delta_s.grad for n, m in self.modules.items()})
        sec_proj = time.perf_counter() - t0
        norm = self.grad_norm()
        if self.t.grad_clip > 0:
            params = [p for g in self.opt.param_groups for p in g["params"] if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(params, self.t.grad_clip)
        norm_clipped = self.grad_norm()
        before = {n: m.delta_s.detach().clone() for n, m in self.modules.items()}
        self.opt.step()
        t0 = time.perf_counter()
        # d = -update, a gradient-like direction; the same hack-ward measure as cin/cout
        d = {n: before[n] - m.delta_s.detach() for n, m in self.modules.items()}
        if pcfg.space == Space.update:
            d_new, ures = project_grads(d, self.v, pcfg)
            with torch.no_grad():
                for n, m in self.modules.items():
                    m.delta_s.copy_(before[n] - d_new[n])
                    if pcfg.mode == ProjectionMode.route and n in ures.removed:
                        m.delta_s_hack.sub_(ures.removed[n])  # the quarantine takes the removed step
            d = d_new
            res.cout = ures.cout
        sec_proj += time.perf_counter() - t0
        return {
            "cin": res.cin,
            "cout": res.cout,
            "cout_update": cin(self.v, d),
            "cin_null": res.cin_null,
            "frac_fired": res.frac_fired,
            "grad_norm": norm,
            "grad_norm_clipped": norm_clipped,
            "sec_projection": sec_proj,
        }

    # -- one step --------------------------------------------------------------------------------

    def train_step(self) -> dict:
        timing: dict = {}
        t_step = time.perf_counter()
        self.model.train()
        rollouts = self.rollouts(timing)
        t0 = time.perf_counter()
        b = self.backward(rollouts)
        timing["sec_backward"] = time.perf_counter() - t0
        lr = self.sched.get_last_lr()[0]
        proj = self.optimizer_step()
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
            "cin_s": cin(self.v, b["g_s"]),
            "cin_t": cin(self.v, b["g_t"]),
            "frac_zero_var": b["frac_zero_var"],
            "basis_overlap": self.basis_overlap,
            "v_axes": sum(V.shape[0] for V in self.v.values()),
            "lr": lr,
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
        if self.basis_overlap < 0.2:
            log.warning(f"v_hack refresh at step {self.step}: basis_overlap={self.basis_overlap:.3f} < 0.2 "
                        f"(the hack basis moved a lot since the last refresh; refresh_every={vc.refresh_every})")  # fmt: skip

    @torch.no_grad()
    def evaluate(self, tag: str) -> dict:
        """Hack and solve rates on the fixed eval prompts, overall and per mode (sampled, fixed seed)."""
        self.model.eval()
        gen = torch.Generator(device=self.device).manual_seed(self.t.seed + 10_000)
        prompts = [self.prompt_ids(p) for p in self.eval_problems]
        comps = self.generate(prompts, EVAL_SAMPLES, gen)
        items = [(self.decode(c), p, p.mode) for i, p in enumerate(self.eval_problems)
                 for c in comps[i * EVAL_SAMPLES : (i + 1) * EVAL_SAMPLES]]  # fmt: skip
        graded = self.grader.grade_batch(items)
        out = {"hack": mean(g.exploited for g in graded), "solve": mean(g.gt_correct for g in graded)}
        for mode in Mode:
            gs = [g for (_, p, _), g in zip(items, graded) if p.mode == mode]
            if gs:
                out[f"hack_{MODES[mode].code}"] = mean(g.exploited for g in gs)
                out[f"solve_{MODES[mode].code}"] = mean(g.gt_correct for g in gs)
        self.tracker.table(f"samples/{tag}", ["problem", "mode", "completion", "reward", "exploited", "gt_correct"],
                           [[p.id, p.mode.value, txt, g.reward, g.exploited, g.gt_correct]
                            for (txt, p, _), g in list(zip(items, graded))[: self.cfg.logger.n_samples]])  # fmt: skip
        return out

    def deploy_eval(self) -> dict:
        ev = {"step": self.step, "kept": self.evaluate(f"kept_{self.step}")}
        if self.cfg.projection.mode in (ProjectionMode.route, ProjectionMode.route2):
            with deployed(self.model):
                ev["ablated"] = self.evaluate(f"ablated_{self.step}")
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
        while self.step < self.t.steps:
            row = self.train_step()
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
        final = self.deploy_eval()
        self.save_checkpoint()
        summary = make_summary(rows, final, self.cfg, time.perf_counter() - t_start)
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


def basis_overlap(old: dict[str, torch.Tensor], new: dict[str, torch.Tensor]) -> float:
    """Mean |<V_new_i, V_old_i>| over rows matched by index in modules present in both."""
    vals = []
    for n in sorted(set(old) & set(new)):
        k = min(old[n].shape[0], new[n].shape[0])
        vals += (old[n][:k] * new[n][:k]).sum(1).abs().tolist()
    return mean(vals) if vals else 0.0


def postfix(row: dict) -> str:
    f = lambda k: "-" if row[k] is None else f"{row[k]:.2f}"
    return f"R={f('reward')} hack_s={f('hack_s')} solve_s={f('solve_s')} cin_s={f('cin_s')} cin_t={f('cin_t')}"


def read_rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x] if path.exists() else []


def make_summary(rows: list[dict], final_eval: dict, cfg: DictConfig, wall: float) -> dict:
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
        "last5": last5,
        "deploy": final_eval,
        "wall_seconds": wall,
        "config": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
    }


def bluf(summary: dict) -> str:
    """A short console table: the answer first."""
    l5, dep = summary["last5"], summary["deploy"]
    fmt = lambda x: "   -" if x is None else f"{x:5.2f}"
    lines = [
        f"BLUF  arm={summary['arm']}  v_hack={summary['vhack_source']}  seed={summary['seed']}  steps={summary['steps']}",
        "                      hack   solve",
        f"  student (last {LAST_N})  {fmt(l5['hack_s'])}  {fmt(l5['solve_s'])}",
        f"  teacher (last {LAST_N})  {fmt(l5['hack_t'])}  {fmt(l5['solve_t'])}",
        f"  eval, as trained   {fmt(dep['kept']['hack'])}  {fmt(dep['kept']['solve'])}",
    ]
    if "ablated" in dep:
        lines.append(f"  eval, quarantine off {fmt(dep['ablated']['hack'])}  {fmt(dep['ablated']['solve'])}")
    lines.append(f"  cin_s {fmt(l5['cin_s'])}  cin_t {fmt(l5['cin_t'])}  cout {fmt(l5['cout'])}  null {fmt(l5['cin_null'])}")
    return "\n".join(lines)


__all__ = ["TIMING", "Trainer", "build_setup", "run"]
