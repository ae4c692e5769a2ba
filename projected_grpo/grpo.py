"""Dr.GRPO: group-mean advantages (no std scaling) and a PPO-clip token loss over a fixed denominator.

With trainer.updates_per_batch = mu, each generated batch gets mu optimizer steps; old_logp are the sampling
policy's log-probs (taken at the first update, before any step), so the ratio is 1 at the first update and
clip_eps bounds it from the second on. mu = 1 is the plain on-policy case (TRL's num_iterations=1)."""

from __future__ import annotations

import torch


def advantages(rewards: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """rewards [P, G] -> (A [P, G] = R - mean_group(R), zero_var [P] bool). A zero-variance group gives A = 0."""
    A = rewards - rewards.mean(dim=1, keepdim=True)
    zero_var = (rewards.max(dim=1).values - rewards.min(dim=1).values) == 0
    return A.masked_fill(zero_var[:, None], 0.0), zero_var


def denominator(group: int, max_new_tokens: int, prompts_per_step: int) -> int:
    """Dr.GRPO's fixed loss denominator: every completion slot of the batch at full length (no per-sequence or
    per-batch token-count normalisation, so a long completion weighs no less per token than a short one)."""
    return group * max_new_tokens * prompts_per_step


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimator of KL(pi || ref): exp(ref - logp) - (ref - logp) - 1  (>= 0)."""
    d = ref_logp - logp
    return torch.exp(d) - d - 1


def token_loss_sum(
    logp: torch.Tensor,  # [B, T] log-probs under the current policy (with grad)
    old_logp: torch.Tensor,  # [B, T] detached log-probs of the sampling policy
    A: torch.Tensor,  # [B] advantages
    mask: torch.Tensor,  # [B, T] 1 on completion tokens
    clip_eps: float,
    beta: float = 0.0,
    ref_logp: torch.Tensor | None = None,  # [B, T] under the free reference model (knobs zeroed)
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum over completion tokens of the clipped surrogate (+ beta * k3 KL) -> (loss [B], kl [B]).

    The caller divides the summed loss by the fixed Dr.GRPO denominator group * max_new_tokens * prompts."""
    ratio = torch.exp(logp - old_logp)
    adv = A[:, None]
    surrogate = torch.minimum(ratio * adv, torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * adv)
    per_tok = -surrogate
    kl = torch.zeros_like(logp)
    if beta > 0:
        assert ref_logp is not None, "beta > 0 needs reference log-probs"
        kl = k3_kl(logp, ref_logp)
        per_tok = per_tok + beta * kl
    m = mask.float()
    return (per_tok * m).sum(1), (kl.detach() * m).sum(1)
