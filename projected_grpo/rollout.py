"""Rollouts of one train step: P prompts, G_s live student samples each (knobs folded into W) graded by the flawed
grader, then G_t cached teacher samples from the pool. The oracle's verdicts ride along for logging only.

With overlap=True (the Trainer's step) grading is off the critical path: each prompt's group is graded in a background
thread (one grade_batch per group, in order, the sandbox servers doing the work), and `Rollout.ready()` waits for a
group's grades only when its backward needs them, so later groups are graded while earlier groups' backwards run.
Same grades, same order of everything seeded (grading draws no random numbers)."""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import torch

from projected_grpo.adapter import folded
from projected_grpo.sampler import sample
from projected_grpo.tokens import encode_completion, prompt_ids


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
    pending: Future | None = None  # the student grades still being computed (collect(overlap=True)); see ready()
    wait_s: float = 0.0  # seconds ready() waited for them
    flagged: list[bool] = field(default_factory=list)  # the monitor's flags (interventions.apply); [] = none

    def ready(self) -> Rollout:
        """Fill the student rewards and verdicts from the background grading (waits once; idempotent)."""
        if self.pending is not None:
            t0 = time.perf_counter()
            graded = self.pending.result()  # a grading bug raises here, in the trainer
            self.wait_s += time.perf_counter() - t0
            self.pending = None
            n = len(graded)  # the first n samples are the students (teachers were appended after them)
            self.rewards[:n] = [g.reward for g in graded]
            self.exploited[:n] = [g.exploited for g in graded]
            self.gt_correct[:n] = [g.gt_correct for g in graded]
        return self


def generate(model, tok, prompts: list[list[int]], n: int, tcfg, generator: torch.Generator) -> list[list[int]]:
    """n samples per prompt, one batched sampler call, knobs folded into W (tcfg: max_new_tokens, temperature)."""
    flat = [p for p in prompts for _ in range(n)]
    if not flat:
        return []
    training = model.training  # sample in eval mode (HF turns the KV cache off under checkpointing)
    model.eval()
    try:
        with folded(model):
            return sample(
                model, flat, tcfg.max_new_tokens, tok.eos_token_id, tok.pad_token_id, tcfg.temperature, generator,
            )  # fmt: skip
    finally:
        model.train(training)


def decode(tok, ids: list[int]) -> str:
    return tok.decode(ids, skip_special_tokens=True)


def collect(model, tok, tcfg, train_problems, n_student: int, n_teacher: int, pool, grader, rng, gen,
            timing: dict, overlap: bool = False, inoculation: str | None = None) -> list[Rollout]:  # fmt: skip
    """One batch: prompts drawn with rng, students sampled with gen and graded, teacher samples drawn with rng
    (the draw order is part of the seeded behaviour). timing gets sec_generation and sec_grading (the grading time
    spent here; with overlap=True grading runs in the background, each Rollout.ready() waits for its group).
    inoculation: intervention.inoculation, added to these training prompts' system message."""
    problems = [rng.choice(train_problems) for _ in range(tcfg.prompts_per_step)]
    prompts = [prompt_ids(tok, p, inoculation=inoculation) for p in problems]
    t0 = time.perf_counter()
    student = generate(model, tok, prompts, n_student, tcfg, gen)
    timing["sec_generation"] = time.perf_counter() - t0
    texts = [decode(tok, c) for c in student]
    t0 = time.perf_counter()
    groups = [[(txt, p, p.mode) for txt in texts[i * n_student : (i + 1) * n_student]] for i, p in enumerate(problems)]
    if overlap:  # one background thread grades the groups in order; the trainer waits in Rollout.ready()
        ex = ThreadPoolExecutor(1, thread_name_prefix="grading")
        pending = [ex.submit(grader.grade_batch, items) for items in groups]
        ex.shutdown(wait=False)
    else:
        graded = grader.grade_batch([it for items in groups for it in items])
        pending = [_done(graded[i * n_student : (i + 1) * n_student]) for i in range(len(problems))]
    timing["sec_grading"] = time.perf_counter() - t0
    out = []
    for i, (p, prompt) in enumerate(zip(problems, prompts)):
        sl = slice(i * n_student, (i + 1) * n_student)
        nan = [float("nan")] * n_student  # placeholders until ready()
        r = Rollout(p, prompt, list(student[sl]), list(texts[sl]), [False] * n_student, list(nan), [None] * n_student,
                    [None] * n_student, pending[i])  # fmt: skip
        for ts in pool.sample(p.id, n_teacher, rng) if n_teacher else []:
            r.completion_ids.append(encode_completion(tok, ts.completion, tcfg.max_new_tokens))
            r.texts.append(ts.completion)
            r.is_teacher.append(True)
            r.rewards.append(ts.reward)
            r.exploited.append(ts.exploited)
            r.gt_correct.append(ts.gt_correct)
        out.append(r if overlap else r.ready())
    return out


def _done(result) -> Future:
    f: Future = Future()
    f.set_result(result)
    return f
