"""The Dr.GRPO backward of one batch: one backward per prompt, δS gradients split per source (student/teacher)
from the same backward (pergrad.grouped_grads), the PPO old log-probs, and route2's per-rollout hooks. Each group's
advantages are computed when its backward starts (Rollout.ready(): grading of later groups overlaps this backward)."""

from __future__ import annotations

from contextlib import nullcontext

import torch

from projected_grpo.adapter import reference_model
from projected_grpo.grpo import advantages, token_loss_sum
from projected_grpo.interventions import loss_keep, shaped_rewards
from projected_grpo.pergrad import grouped_grads
from projected_grpo.projection import cin
from projected_grpo.tokens import completion_logprobs, pack, shared_prompt_logprobs


def flags_of(r) -> list[bool]:
    return list(r.flagged) if r.flagged else [False] * len(r.rewards)


def packed_group(r, pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One prompt's group as a packed batch (tokens.pack): ids, attn, cmask [G, T] on `device`."""
    return tuple(t.to(device) for t in pack([r.prompt_ids] * len(r.completion_ids), r.completion_ids, pad_id))


def group_logprobs(model, r, pad_id: int, store, shared: bool):
    """log p of one prompt's group of completions -> (logp [G, Lc], mask [G, Lc]), per-source gradient rows set on
    `store` (None: no gradients taken). shared (trainer.shared_prompt_backward): the prompt runs once per source
    present (tokens.shared_prompt_logprobs), else once per completion (the packed batch)."""
    sources = torch.tensor(r.is_teacher).long()  # [G] 0 student, 1 teacher
    if not shared:
        if store is not None:
            store.set_groups(sources, 2)
        return completion_logprobs(model, *packed_group(r, pad_id, next(model.parameters()).device))
    present = sources.unique()  # [S] sorted: the prompt rows' sources
    if store is not None:
        store.set_groups(present, 2)
    rows = torch.searchsorted(present, sources)  # [G] each completion's prompt row
    on_prompt = (lambda: store.set_groups(sources, 2)) if store is not None else None
    return shared_prompt_logprobs(model, r.prompt_ids, r.completion_ids, rows, pad_id, on_prompt)


def grpo_backward(model, modules, opt, rollouts, tcfg, denom: float, pad_id: int, route2=None,
                  old_logps: list | None = None, icfg=None) -> dict:  # fmt: skip
    """Dr.GRPO loss, one backward per prompt; returns loss stats, per-source δS gradients (before any route2
    mask) and the old log-probs: old_logps=None (the first update of a batch, knobs as sampled) takes this
    pass's log-probs as the sampling policy's; later updates pass them back. tcfg: cfg.trainer.
    icfg (cfg.intervention): penalty shapes the rewards of flagged samples before the advantages; screening
    masks flagged samples' tokens out of the loss after them (interventions.py; flags in Rollout.flagged)."""
    device = next(model.parameters()).device
    shared = tcfg.shared_prompt_backward and route2 is None  # route2: the packed batch (group_logprobs)
    first = old_logps is None
    olds: list[torch.Tensor | None] = []
    teacher_in_loss = False
    zero_var: list[bool] = []
    loss_total = kl_total = 0.0
    opt.zero_grad(set_to_none=True)
    n_tokens = 0
    r2 = route2
    if r2 is not None:
        r2.begin_step()
    masking = r2.masking() if r2 is not None else nullcontext()  # route2 mask=act: the token mask
    with grouped_grads(model, groups=torch.tensor([0, 1])) as store, masking:
        for i, r in enumerate(rollouts):
            shaped = shaped_rewards(r.ready().rewards, flags_of(r), icfg)  # waits for this group's grades only
            A_i, zv = advantages(torch.tensor([shaped]))  # [1, G]
            zero_var.append(bool(zv[0]))
            if zero_var[i]:
                olds.append(None)
                continue  # contributes nothing (A = 0, and beta*KL alone is not worth a backward)
            teacher_in_loss |= any(r.is_teacher)
            ref = None
            if tcfg.beta > 0:  # BEFORE the policy forward: the reference context zeroes the knobs and route2's
                # A_q/B_q in place, which must not touch tensors the policy graph saved for its backward
                with torch.no_grad(), reference_model(model):
                    ref, _ = group_logprobs(model, r, pad_id, None, shared)
            if r2 is None:
                logp, mask = group_logprobs(model, r, pad_id, store, shared)  # [G, Lc]
            else:  # route2: its token masks and mask=grad columns are defined on the packed batch
                store.set_groups(torch.tensor(r.is_teacher), 2)  # per-source: 0 student, 1 teacher
                store.onehot = r2.group_columns(store.onehot, i, len(rollouts))  # mask=grad: a group per rollout
                ids, attn, cmask = packed_group(r, pad_id, device)
                logp, mask = completion_logprobs(model, ids, attn, cmask)  # [G, Lc]
            old = logp.detach() if first else old_logps[i]  # the sampling policy's log-probs [G, Lc]
            olds.append(old)
            keep = torch.tensor(loss_keep(flags_of(r), icfg), device=mask.device)  # [G] screening
            mask = mask * keep[:, None].to(mask.dtype)  # [G, Lc]
            loss_g, kl_g = token_loss_sum(logp, old, A_i[0].to(logp), mask, tcfg.clip_eps, tcfg.beta, ref)
            loss = loss_g.sum() / denom
            if r2 is not None:  # act flag counts (oracle labels: logging only) and the quarantine's L1
                r2.record(cmask, r.is_teacher, r.exploited)
                loss = loss + r2.l1_penalty(cmask) / tcfg.prompts_per_step
            loss.backward()
            loss_total += float(loss.detach())
            kl_total += float(kl_g.sum())
            n_tokens += sum(len(c) for c in r.completion_ids)
    zeros = {n: torch.zeros(m.r, device=device) for n, m in modules.items()}
    g_s = {n: store.grads[n][0] if n in store.grads else zeros[n] for n in modules}
    g_t = {n: store.grads[n][1] if n in store.grads else zeros[n] for n in modules}
    for m in modules.values():  # a step with only zero-variance groups has no graph at all
        if m.delta_s.grad is None:
            m.delta_s.grad = torch.zeros_like(m.delta_s)
    if r2 is not None:  # mask=grad: the per-rollout δS gradients
        r2.after_backward(store.grads, rollouts)
    return {
        "loss": loss_total,
        "kl": kl_total / max(1, n_tokens),
        "frac_zero_var": float(torch.tensor(zero_var, dtype=torch.float32).mean()),
        "g_s": g_s,  # name -> [r], the student samples' δS gradient (before a route2 act mask)
        "g_t": g_t,  # name -> [r], the teacher samples'
        "teacher_in_loss": teacher_in_loss,  # False: cin_t is undefined (null)
        "old_logps": olds,
    }


def cin_of_teacher(v: dict[str, torch.Tensor], b: dict) -> float | None:
    """cin of the teacher samples' δS gradient; None (undefined, not 0) when no teacher sample was in the loss."""
    return cin(v, b["g_t"]) if b["teacher_in_loss"] else None
