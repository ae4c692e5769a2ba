"""projection=trusted: the trusted subspace of each module's δS, from a short clean warm-up.

Warm-up (decision, issue 21): `projection.trusted.warmup_steps` supervised AdamW steps (lr and betas of
cfg.trainer) on honest completions of train problems (``completions.honest``, the clean side of v_hack's pairs),
each step the mean completion NLL of `batch` (prompt, honest completion) examples, cycling through the problems in a
seeded order. Why supervised, not GRPO on the no-loophole reward: that reward IS the strict oracle, so a GRPO
warm-up would make this arm oracle-informed (the no-cheat rule could not cover it); and on the organism a few GRPO
steps see mostly zero-variance groups (solve rates ~0.1), so their update directions would be mostly noise. The
honest completions are the information v_hack already uses, no verdict of any grader.

Per module, with the per-step updates Δ_t = δS after − before [r], stacked U [T, r]: SVD U = P diag(S) Q; the
trusted basis is B = the top k rows of Q [k, r] with weights w = S[:k] / S[0] (so the dominant direction passes
at full size). A gradient is then replaced by Bᵀ diag(w) B g (projection.trusted_project). The knobs are restored
to their values before the warm-up (zero): the warm-up measures the subspace only, GRPO starts where every arm does."""

from __future__ import annotations

import random

import torch

from projected_grpo.adapter import adapter_modules
from projected_grpo.env.completions import honest
from projected_grpo.tokens import completion_nll, encode_completion, pack, prompt_ids


def warmup_examples(problems, tok, n: int, seed: int) -> list[tuple[list[int], list[int]]]:
    """n (prompt ids, honest completion ids) examples: train problems in a seeded order, honest variants 0, 1, ..."""
    train = [p for p in problems if p.split == "train"]
    if not train:
        raise ValueError("projection=trusted needs train problems for its warm-up; the problem set has none")
    order = list(train)
    random.Random(f"trusted|{seed}").shuffle(order)
    out = []
    for i in range(n):
        p = order[i % len(order)]
        out.append((prompt_ids(tok, p), encode_completion(tok, honest(p, i // len(order)))))
    return out


def warmup_updates(model, tok, problems, tr_cfg, tcfg, seed: int) -> dict[str, torch.Tensor]:
    """name -> U [warmup_steps, r]: δS's per-step updates over the supervised warm-up; knobs restored after."""
    mods = adapter_modules(model)
    start = {n: m.delta_s.detach().clone() for n, m in mods.items()}
    req = {n: m.delta_s.requires_grad for n, m in mods.items()}
    training = model.training
    dev = next(model.parameters()).device
    opt = torch.optim.AdamW([m.delta_s for m in mods.values()], lr=tcfg.lr, betas=tuple(tcfg.betas), weight_decay=0.0)
    ex = warmup_examples(problems, tok, tr_cfg.warmup_steps * tr_cfg.batch, seed)
    steps: dict[str, list[torch.Tensor]] = {n: [] for n in mods}
    model.train()
    try:
        for m in mods.values():
            m.delta_s.requires_grad_(True)
        for s in range(tr_cfg.warmup_steps):
            batch = ex[s * tr_cfg.batch : (s + 1) * tr_cfg.batch]
            ids, attn, cmask = (t.to(dev) for t in pack([b[0] for b in batch], [b[1] for b in batch], tok.pad_token_id))
            opt.zero_grad(set_to_none=True)
            completion_nll(model, ids, attn, cmask).mean().backward()
            before = {n: m.delta_s.detach().clone() for n, m in mods.items()}
            opt.step()
            for n, m in mods.items():
                steps[n].append((m.delta_s.detach() - before[n]).float().cpu())
    finally:
        with torch.no_grad():
            for n, m in mods.items():
                m.delta_s.copy_(start[n])
                m.delta_s.grad = None
                m.delta_s.requires_grad_(req[n])
        model.train(training)
    return {n: torch.stack(u) for n, u in steps.items()}


def subspace(U: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """U [T, r] -> (B [k, r] orthonormal rows, w [k] = S_i / S_0); all-zero U gives w = 0 (nothing passes)."""
    _, S, Vh = torch.linalg.svd(U.double(), full_matrices=False)
    w = S[:k] / S[0] if float(S[0]) > 0 else torch.zeros_like(S[:k])
    return Vh[:k].float(), w.float()


def trusted_subspace(cfg, model, tok, problems) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """name -> (B [k, r], w [k]) for every adapter module (cfg: the run config; seeded by trainer.seed)."""
    tr = cfg.projection.trusted
    U = warmup_updates(model, tok, problems, tr, cfg.trainer, cfg.trainer.seed)
    dev = next(model.parameters()).device
    return {n: tuple(t.to(dev) for t in subspace(u, tr.k)) for n, u in U.items()}
