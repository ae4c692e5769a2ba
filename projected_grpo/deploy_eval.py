"""The deployment eval of a Trainer: fixed held-out and train prompts (balanced per mode), hack and solve rates with
Wilson intervals, as trained and, for route/route2, with the quarantine ablated; appended to deploy_eval.jsonl."""

from __future__ import annotations

import json

import torch

from projected_grpo import evaluate as eval_mod
from projected_grpo.adapter import deployed
from projected_grpo.config import ProjectionMode
from projected_grpo.evaluate import EVAL_SAMPLES
from projected_grpo.rollout import decode, generate
from projected_grpo.tokens import prompt_ids


@torch.no_grad()
def evaluate(tr, problems: list, tag: str) -> dict:
    """Hack and solve rates of trainer tr on fixed eval prompts, overall and per mode, with n and Wilson 95%
    intervals (EVAL_SAMPLES samples per prompt, fixed seed)."""
    tr.model.eval()
    gen = torch.Generator(device=tr.device).manual_seed(tr.t.seed + 10_000)
    prompts = [prompt_ids(tr.tok, p) for p in problems]
    comps = generate(tr.model, tr.tok, prompts, EVAL_SAMPLES, tr.t, gen)
    items = [(decode(tr.tok, c), p, p.mode) for i, p in enumerate(problems)
             for c in comps[i * EVAL_SAMPLES : (i + 1) * EVAL_SAMPLES]]  # fmt: skip
    graded = tr.grader.grade_batch(items)
    tr.tracker.table(f"samples/{tag}", ["problem", "mode", "completion", "reward", "exploited", "gt_correct"],
                     [[p.id, p.mode.value, txt, g.reward, g.exploited, g.gt_correct]
                      for (txt, p, _), g in list(zip(items, graded))[: tr.cfg.logger.n_samples]])  # fmt: skip
    return eval_mod.summarize([(p.mode, g.exploited, g.gt_correct) for (_, p, _), g in zip(items, graded)])


def deploy_eval(tr) -> dict:
    """Per split (held-out, train): the model as trained (kept) and, for route/route2, with the quarantine
    ablated. A missing split carries the reason instead. Appends to tr.deploy_evals and deploy_eval.jsonl."""
    ev: dict = {"step": tr.step, "prompts_per_mode": tr.t.eval_prompts_per_mode}
    routed = tr.cfg.projection.mode in (ProjectionMode.route, ProjectionMode.route2)
    for split in eval_mod.SPLITS:
        if split not in tr.eval_sets:
            ev[split] = {"missing": tr.eval_notes[split]}
            continue
        problems = tr.eval_sets[split]
        ev[split] = {"prompts": len(problems), "kept": tr.evaluate(problems, f"{split}_kept_{tr.step}")}
        if split in tr.eval_notes:
            ev[split]["note"] = tr.eval_notes[split]
        if routed:
            with deployed(tr.model):
                ev[split]["ablated"] = tr.evaluate(problems, f"{split}_ablated_{tr.step}")
    tr.deploy_evals.append(ev)
    with open(tr.s.run_dir / "deploy_eval.jsonl", "a") as f:
        f.write(json.dumps(ev) + "\n")
    return ev
