"""The probe monitor's detector: a linear classifier (logistic regression) on the policy's activations, trained on
the same (hack, clean) pairs that build v_hack (``vhack.make_pairs``: train-split problems x vhack.modes, the last
vhack.n_heldout pairs held out), so the probe and the v_hack arms know the same hack modes.

Feature of one completion: the last hidden state (after the final norm) averaged over its completion tokens,
x [d]; standardised with the training pairs' mean and std; P(hack) = sigmoid(w·(x - μ)/σ + b). Trained at setup on
the base model (knobs zero) by full-batch LBFGS with an L2 penalty; applied to each training sample under the
current policy. It reads no oracle verdict: labels come from how each pair was written (hack vs clean)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from projected_grpo.config import VSource
from projected_grpo.tokens import pack
from projected_grpo.vhack import examples, make_pairs

FEATURE_BATCH = 8  # sequences per no-grad forward


@torch.no_grad()
def features(model, prompts: list[list[int]], comps: list[list[int]], pad_id: int) -> torch.Tensor:
    """Mean over completion tokens of the last hidden state -> X [n, d] (float32, on the CPU)."""
    dev = next(model.parameters()).device
    training = model.training
    model.eval()
    rows = []
    try:
        for s in range(0, len(prompts), FEATURE_BATCH):
            ids, attn, cmask = (t.to(dev) for t in pack(prompts[s : s + FEATURE_BATCH], comps[s : s + FEATURE_BATCH], pad_id))
            pos = (attn.cumsum(1) - 1).clamp(min=0)
            h = model(input_ids=ids, attention_mask=attn, position_ids=pos, output_hidden_states=True,
                      logits_to_keep=1).hidden_states[-1].float()  # [b, T, d]  # fmt: skip
            m = cmask.float()[..., None]  # [b, T, 1]
            rows.append(((h * m).sum(1) / m.sum(1).clamp(min=1)).cpu())  # [b, d]
    finally:
        model.train(training)
    return torch.cat(rows)


@dataclass
class LinearProbe:
    mu: torch.Tensor  # [d] feature mean of the training pairs
    sd: torch.Tensor  # [d] feature std (floored)
    w: torch.Tensor  # [d]
    b: float
    cut: float  # flag when the logit w·(x - μ)/σ + b > cut (compared as logits: no ties where P(hack) saturates)

    def logit(self, X: torch.Tensor) -> torch.Tensor:
        """X [n, d] -> logit of P(hack) [n]."""
        return ((X - self.mu) / self.sd) @ self.w + self.b

    def prob(self, X: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logit(X))

    def flag(self, X: torch.Tensor) -> torch.Tensor:
        return self.logit(X) > self.cut

    @property
    def threshold(self) -> float:
        """The cut as a P(hack) threshold."""
        return float(torch.sigmoid(torch.tensor(self.cut, dtype=torch.float64)))  # no overflow at any cut


def fit(X: torch.Tensor, y: torch.Tensor, l2: float, steps: int, threshold: float = 0.5) -> LinearProbe:
    """Logistic regression on standardised X [n, d] with labels y [n] (1 = hack); deterministic full-batch LBFGS."""
    X, y = X.double(), y.double()
    mu, sd = X.mean(0), X.std(0).clamp(min=1e-6)
    Z = (X - mu) / sd
    w = torch.zeros(X.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(Z @ w + b, y) + l2 * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    cut = math.log(threshold / (1 - threshold))  # P(hack) > threshold  <=>  logit > cut
    return LinearProbe(mu.float(), sd.float(), w.detach().float(), float(b.detach()), cut)


def pair_data(model, tok, pairs) -> tuple[torch.Tensor, torch.Tensor]:
    """(X [2n, d], y [2n]) of pairs: rows 2i hack (y = 1), 2i+1 clean (y = 0)."""
    prompts, comps, _ = examples(tok, pairs)
    X = features(model, prompts, comps, tok.pad_token_id)
    y = torch.tensor([1.0, 0.0] * len(pairs))
    return X, y


def accuracy(probe: LinearProbe, X: torch.Tensor, y: torch.Tensor) -> float:
    return float((probe.flag(X).float() == y).float().mean()) if len(y) else float("nan")


def train_probe(mcfg, vcfg, model, tok, problems) -> tuple[LinearProbe, dict]:
    """The probe from v_hack's real pairs (mcfg: intervention.monitor). Returns (probe, {n_train, n_heldout,
    train_acc, heldout_acc}); held-out accuracy is over the vhack.n_heldout held-out pairs (both sides)."""
    train, heldout = make_pairs(vcfg, problems, VSource.real)
    X, y = pair_data(model, tok, train)
    probe = fit(X, y, mcfg.probe_l2, mcfg.probe_steps, mcfg.probe_threshold)
    info = {"n_train": len(train), "n_heldout": len(heldout), "train_acc": accuracy(probe, X, y)}
    if heldout:
        Xh, yh = pair_data(model, tok, heldout)
        info["heldout_acc"] = accuracy(probe, Xh, yh)
    return probe, info
