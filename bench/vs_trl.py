#!/usr/bin/env python
"""The project's GRPO optimizer step vs TRL's GRPOTrainer step, same work, same process, alternating.

Both sides, per configuration P x G x N (prompts x completions x completion tokens per step):
  * model: the tiny embedded Qwen3 (conf/model/tiny.yaml dims, init_seed 0) and the project's tokenizer
    (projected_grpo.tokenizer.build_tokenizer), built by projected_grpo.model.build_model; fp32, CPU,
    `--threads` torch threads (default 1) for both.
  * prompt: one fixed rendered train prompt (the problem with the median prompt length), the same token ids on
    both sides, P copies per step.
  * generation: exactly N tokens per completion. Project: the real `Trainer.generate` (knobs folded, the lean
    sampler, all P*G rows in one call) with eos replaced by an id that cannot be drawn. TRL: `generate` with
    generation_kwargs min_new_tokens=N and the pad token suppressed (as /work/shared/bench/trl_grpo_baseline.py).
  * reward: the same constant-time function on both sides (alternating 0/1 within each group, so every group
    has variance and no backward is skipped); the project's grader is replaced by it.
  * loss: Dr.GRPO on both; TRL loss_type="dr_grpo", scale_rewards="none", beta=0, num_iterations=1, bf16 off,
    gradient checkpointing off (TRL defaults both on), one generation per optimizer step.
What one step is:
  * project: `Trainer.train_step()`: rollouts (sample + decode + stub grading), backward (Dr.GRPO, one backward per
    prompt with per-source δS gradients via pergrad.grouped_grads), optimizer_step (projection=erase with the cached
    v_hack, clip, AdamW on the δS knobs), scheduler, metrics row.
  * TRL: one optimizer step of GRPOTrainer.train() (on_step_begin -> on_step_end): generation, reward, advantages,
    forward/backward, clip, AdamW (full fine-tuning of the 1M-parameter model: TRL's default; the project trains
    only the δS knobs but still backpropagates through the whole frozen network).
Alternation: a TRL callback runs one project step right after each TRL step ends, so A/B steps interleave
in one process; the first --warmup pairs are discarded, medians over the rest.

Configs: PxGxN on the embedded problems (the prompt of median length), PxGxNr on the real LeetCode sample
(--real-source, the rl-rewardhacking schema: the median-length rendered train prompt, hundreds of tokens).
Step split, medians per side: generation, grading (project: the grading the step waited for; both sides use the
stub reward), backward (project: Dr.GRPO backward(s) + AdamW; TRL: the step minus generation and reward, i.e. its
log-prob forward, backward, clip and AdamW), projection (project only).

Last stdout line: JSON {ratio (worst config: project s/step / TRL s/step), configs: [...raw medians...]}.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="1x8x128,4x8x128,1x8x128r", help="comma list of PxGxN (suffix r: real problems)")
    p.add_argument("--real-source", default=str(C.REPO.parent / "shared" / "data" / "leetcode_medhard_sample.jsonl"),
                   help="env.source of the r configs")
    p.add_argument("--steps", type=int, default=5, help="timed steps per side")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="3 timed steps, 1x8x128 and 4x8x128 with N=64")
    p.add_argument("--project-overrides", default="", help="space-separated config overrides of the project side "
                   "(e.g. trainer.folded_forward=false: the unfolded adapter forward)")
    return p.parse_args(argv)


def run_config(P: int, G: int, N: int, steps: int, warmup: int, threads: int, overrides=()) -> dict:
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from trl import GRPOConfig, GRPOTrainer

    from projected_grpo.env.prompts import render_prompt
    from projected_grpo.model import build_model

    C.force_full_length()
    cfg, s, tr = C.project_trainer(P, G, N, extra=overrides, threads=threads)
    tok = s.tokenizer
    probs = sorted(tr.train_problems, key=lambda p: len(tr.prompt_ids(p)))
    prob = probs[len(probs) // 2]
    tr.train_problems = [prob]
    prompt_ids = tr.prompt_ids(prob)
    prompt_text = tok.apply_chat_template(render_prompt(prob, prob.mode), add_generation_prompt=True, tokenize=False)

    trl_model, trl_tok = build_model(cfg.model, Path(cfg.paths.cache_dir))
    trl_model.train()
    trl_model.generation_config.eos_token_id = trl_tok.eos_token_id
    trl_model.generation_config.pad_token_id = trl_tok.pad_token_id
    trl_model.generation_config.bos_token_id = None
    n_steps = warmup + steps
    out_dir = tempfile.mkdtemp(prefix="trl_vs_")
    gargs = GRPOConfig(
        output_dir=out_dir, use_cpu=True, seed=0, max_steps=n_steps,
        per_device_train_batch_size=P * G, gradient_accumulation_steps=1, num_generations=G,
        max_completion_length=N, temperature=1.0, top_p=1.0, top_k=0,
        generation_kwargs={"min_new_tokens": N, "suppress_tokens": [trl_tok.pad_token_id]},
        learning_rate=1e-6, max_grad_norm=1.0, beta=0.0, num_iterations=1, epsilon=0.2,
        scale_rewards="none", loss_type="dr_grpo", use_vllm=False, bf16=False, fp16=False,
        gradient_checkpointing=False, report_to="none", logging_strategy="no", save_strategy="no",
        eval_strategy="no", disable_tqdm=True, dataloader_num_workers=0, log_completions=False, shuffle_dataset=False,
    )  # fmt: skip

    def reward(completions, **kw):
        t = C.clock()
        out = C.const_rewards(len(completions))
        rec["trl_reward"].append(C.clock() - t)
        return out

    rec = {"trl": [], "trl_gen": [], "trl_reward": [], "proj": [], "proj_gen": [], "proj_grading": [], "proj_bwd": [],
           "proj_proj": [], "trl_prompt_len": None, "trl_lens": []}  # fmt: skip

    class Alternate(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            self.t = C.clock()

        def on_step_end(self, a, state, control, **kw):
            rec["trl"].append(C.clock() - self.t)
            t = C.clock()
            row = tr.train_step()  # the project's step, right after TRL's
            rec["proj"].append(C.clock() - t)
            rec["proj_gen"].append(row["sec_generation"])
            rec["proj_bwd"].append(row["sec_backward"])
            rec["proj_grading"].append(row["sec_grading"])
            rec["proj_proj"].append(row["sec_projection"])

    trainer = GRPOTrainer(
        model=trl_model, reward_funcs=[reward], args=gargs,
        train_dataset=Dataset.from_dict({"prompt": [prompt_text] * (P * (n_steps + 2))}),
        processing_class=trl_tok, callbacks=[Alternate()],
    )  # fmt: skip
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    orig = trainer._generate_single_turn

    def timed(prompt_ids_, *a, **k):
        rec["trl_prompt_len"] = len(prompt_ids_[0])
        t = C.clock()
        res = orig(prompt_ids_, *a, **k)
        rec["trl_gen"].append(C.clock() - t)
        rec["trl_lens"] += [len(c) for c in res[0]]
        return res

    trainer._generate_single_turn = timed
    torch.set_num_threads(threads)
    trainer.train()
    tr.close()
    if rec["trl_prompt_len"] != len(prompt_ids):
        print(f"  [warn] prompt lengths differ: project {len(prompt_ids)} TRL {rec['trl_prompt_len']}")
    assert set(rec["trl_lens"]) == {N}, f"TRL completions not all {N} tokens: {sorted(set(rec['trl_lens']))}"
    sl = slice(warmup, None)
    res = {
        "config": f"{P}x{G}x{N}" + ("r" if overrides and any(o.startswith("env.source=") for o in overrides) else ""),
        "project_sec_per_step": C.median(rec["proj"][sl]),
        "trl_sec_per_step": C.median(rec["trl"][sl]),
        "project_sec_generation": C.median(rec["proj_gen"][sl]),
        "trl_sec_generation": C.median(rec["trl_gen"][sl]),
        "project_sec_backward": C.median(rec["proj_bwd"][sl]),
        "project_sec_grading": C.median(rec["proj_grading"][sl]),
        "project_sec_projection": C.median(rec["proj_proj"][sl]),
        "trl_sec_grading": C.median(rec["trl_reward"][sl]),
        "trl_sec_backward": C.median([t - g - r for t, g, r in zip(rec["trl"], rec["trl_gen"], rec["trl_reward"])][sl]),
        "prompt_tokens": len(prompt_ids),
        "steps": len(rec["proj"][sl]),
        "threads": threads,
    }
    res["ratio"] = res["project_sec_per_step"] / res["trl_sec_per_step"]
    res["ratio_generation"] = res["project_sec_generation"] / res["trl_sec_generation"]
    return res


def main(argv=None):
    args = parse_args(argv)
    warnings.filterwarnings("ignore")
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    configs = args.configs
    if args.quick:
        args.steps, configs = 3, "1x8x64,4x8x64"
    results = []
    for c in configs.split(","):
        real = c.endswith("r")
        if real and not Path(args.real_source).exists():
            print(f"  [skip] {c}: --real-source {args.real_source} absent (the shared developer data is not mounted)")
            continue
        P, G, N = (int(x) for x in c.rstrip("r").split("x"))
        ov = args.project_overrides.split() + ([f"env.source={args.real_source}"] if real else [])
        r = run_config(P, G, N, args.steps, args.warmup, args.threads, ov)
        results.append(r)
        print(
            f"{r['config']:>10}  project {r['project_sec_per_step']:.3f} s/step (gen {r['project_sec_generation']:.3f}, "
            f"grade {r['project_sec_grading']:.3f}, bwd {r['project_sec_backward']:.3f}, proj {r['project_sec_projection']:.4f})"
            f"  TRL {r['trl_sec_per_step']:.3f} s/step (gen {r['trl_sec_generation']:.3f}, grade {r['trl_sec_grading']:.4f}, "
            f"bwd {r['trl_sec_backward']:.3f})  ratio {r['ratio']:.3f}  gen ratio {r['ratio_generation']:.3f}  "
            f"[{r['steps']} steps, prompt {r['prompt_tokens']} tok]",
            flush=True,
        )  # fmt: skip
    print(json.dumps({"ratio": max(r["ratio"] for r in results), "target": 0.5, "configs": results}))


if __name__ == "__main__":
    main()
