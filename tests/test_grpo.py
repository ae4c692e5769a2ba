"""Dr.GRPO pieces (projected_grpo/grpo.py): advantages, the fixed denominator, PPO clipping with mu > 1, k3 KL."""

import math

import pytest
import torch

from projected_grpo.grpo import advantages, denominator, k3_kl, token_loss_sum


def test_advantages_are_group_centred_without_std_scaling():
    # kills: GRPO's std scaling (A / std) and a global instead of per-group mean
    R = torch.tensor([[0.0, 1.0, 1.0, 4.0], [0.25, 0.25, 1.25, 0.25]])
    A, zero_var = advantages(R)
    assert torch.allclose(A, torch.tensor([[-1.5, -0.5, -0.5, 2.5], [-0.25, -0.25, 0.75, -0.25]]))
    assert not zero_var.any()


def test_zero_variance_group_gets_zero_advantage():
    # kills: a zero-variance test on the mean instead of the spread (or no zero_var flag at all)
    A, zero_var = advantages(torch.tensor([[1.25, 1.25, 1.25], [0.0, 1.0, 0.0]]))
    assert zero_var.tolist() == [True, False] and not A[0].any()


def test_fixed_denominator_sums_tokens_without_length_normalisation():
    # kills: a per-sequence mean over tokens (Dr.GRPO's length bias fix undone) and a denominator that is not
    # group * max_new_tokens * prompts
    assert denominator(8, 256, 4) == 8 * 256 * 4
    logp = torch.zeros(2, 6, requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0]])
    loss, _ = token_loss_sum(logp, logp.detach(), torch.tensor([1.0, 1.0]), mask, clip_eps=0.2)
    assert loss.tolist() == [-6.0, -2.0]  # ratio 1: -A per completion token, summed
    loss.sum().backward()
    assert torch.equal(logp.grad, -mask.float())  # every token the same weight, whatever the length


def ratio_grad(ratio: float, A: float, clip_eps: float = 0.2) -> float:
    """d loss / d logp for one token at a given ratio to the old policy."""
    old = torch.zeros(1, 1)
    logp = torch.full((1, 1), math.log(ratio), requires_grad=True)
    loss, _ = token_loss_sum(logp, old, torch.tensor([A]), torch.ones(1, 1), clip_eps)
    loss.sum().backward()
    return float(logp.grad)


@pytest.mark.parametrize(
    "ratio,A,clipped",
    [(1.3, 1.0, True), (1.1, 1.0, False), (0.7, -1.0, True), (0.9, -1.0, False), (1.3, -1.0, False), (0.7, 1.0, False)],
)
def test_clipping_with_old_logprobs_of_the_sampling_policy(ratio, A, clipped):
    # kills: the old ratio-always-1 call (token_loss_sum(logp, logp.detach(), ...)) and a clip on the wrong side
    # (max instead of min): a positive-advantage token past 1+eps (negative past 1-eps) gets no gradient
    g = ratio_grad(ratio, A)
    assert (g == 0.0) == clipped
    if not clipped:
        assert g == pytest.approx(-A * ratio)  # d(-ratio*A)/dlogp


def test_second_update_of_a_batch_is_clipped():
    """mu = 2: after one step the ratio to the sampling policy moves; tokens past the clip stop contributing."""
    # kills: using the current policy's detached log-probs as old (ratio 1 again at every update)
    old = torch.zeros(1, 4)
    logp = torch.tensor([[0.5, 0.1, -0.5, -0.1]], requires_grad=True)  # after the first update
    loss, _ = token_loss_sum(logp, old, torch.tensor([1.0]), torch.ones(1, 4), clip_eps=0.2)
    loss.sum().backward()
    assert logp.grad[0, 0] == 0.0 and logp.grad[0, 1] != 0.0 and logp.grad[0, 2] != 0.0


def test_k3_kl_estimates_kl_policy_to_reference():
    # kills: swapped arguments (k3_kl(ref, logp) under samples from pi estimates E_pi[pi/ref] - KL(pi||ref) - 1,
    # 0.97 here against KL(pi||ref) = 0.63)
    pi = torch.tensor([0.7, 0.2, 0.1])
    ref = torch.tensor([0.2, 0.3, 0.5])
    kl_pi_ref = float((pi * (pi / ref).log()).sum())
    x = torch.multinomial(pi, 200_000, replacement=True, generator=torch.Generator().manual_seed(0))
    est = float(k3_kl(pi.log()[x], ref.log()[x]).mean())  # samples from pi, as in training
    assert est == pytest.approx(kl_pi_ref, rel=0.03)
    swapped = float(k3_kl(ref.log()[x], pi.log()[x]).mean())
    assert swapped != pytest.approx(kl_pi_ref, rel=0.2)
    assert (k3_kl(pi.log()[x], ref.log()[x]) >= 0).all()


def test_kl_penalty_pulls_towards_the_reference():
    # kills: a sign flip of the KL term (beta * kl subtracted)
    logp = torch.tensor([[-0.5]], requires_grad=True)
    ref = torch.tensor([[-1.0]])  # pi puts more mass on this token than ref
    loss, kl = token_loss_sum(logp, logp.detach(), torch.tensor([0.0]), torch.ones(1, 1), 0.2, beta=1.0, ref_logp=ref)
    loss.sum().backward()
    assert float(kl) > 0 and float(logp.grad) > 0  # descending lowers logp towards ref
