"""v_hack extraction: per-completion δS gradients of the completion NLL from batched backwards, D = G_hack − G_clean
per module, SVD, top rows of Vh oriented hack-ward by a majority vote over the pairs."""

from __future__ import annotations

import torch

from projected_grpo.adapter import adapter_modules
from projected_grpo.pergrad import grouped_grads
from projected_grpo.tokens import completion_nll, encode_completion, encode_prompt, pack
from projected_grpo.vhack.errors import VHackError

MICRO_BATCH = 8  # completions per forward/backward (length-sorted) in get_v_hack: bounds activation memory
# on big models (~4 GB per 500-token completion on Qwen3-4B) and limits padding


# ---------------------------------------------------------------------------------------------------
# Per-completion δS gradients


def examples(tok, pairs) -> tuple[list[list[int]], list[list[int]], list[str]]:
    """Rows 2i (hack) and 2i+1 (clean) of pair i: prompt ids, completion ids, a label for error messages."""
    prompts, comps, labels = [], [], []
    for p in pairs:
        pid = encode_prompt(tok, p.prompt_messages)
        mode = getattr(p.mode, "value", p.mode)
        for side, text in (("hack", p.hack_completion), ("clean", p.clean_completion)):
            prompts.append(pid)
            comps.append(encode_completion(tok, text))
            labels.append(f"pair (problem_id={p.problem_id!r}, mode={mode!r}) {side} completion")
    return prompts, comps, labels


class _GradMode:
    """Eval mode + delta_s requiring grad for the duration; restores train flag and requires_grad on exit."""

    def __init__(self, model):
        self.model, self.mods = model, adapter_modules(model)

    def __enter__(self):
        if not self.mods:
            raise VHackError("the model has no AntiPaSTO modules; wrap it first (adapter.wrap_model)")
        self.training = self.model.training
        self.req = {n: m.delta_s.requires_grad for n, m in self.mods.items()}
        self.model.eval()
        for m in self.mods.values():
            m.delta_s.requires_grad_(True)
        return self

    def __exit__(self, *exc):
        for n, m in self.mods.items():
            m.delta_s.requires_grad_(self.req[n])
        self.model.train(self.training)


def _check_finite(t: torch.Tensor, labels: list[str], what: str) -> None:
    bad = ~torch.isfinite(t.reshape(t.shape[0], -1)).all(1)  # [B]
    if bad.any():
        b = int(bad.nonzero()[0])
        raise VHackError(
            f"non-finite {what} for the {labels[b]} during v_hack extraction; check the model weights/dtype "
            f"(float16 overflows easily: try model.dtype=bfloat16 or float32) and that completion's text"
        )


def _batch_grads(model, mods, prompts, comps, labels, pad_id) -> dict[str, torch.Tensor]:
    """One forward/backward over a batch: name -> [B, r] δS gradients of each row's mean completion NLL."""
    dev = next(model.parameters()).device
    ids, attn, cmask = (t.to(dev) for t in pack(prompts, comps, pad_id))
    with grouped_grads(model, batch=len(prompts)) as store:
        nll = completion_nll(model, ids, attn, cmask)  # [B]
        _check_finite(nll.detach(), labels, "completion NLL")
        # autograd.grad (not .backward): the model's .grad fields are never touched
        torch.autograd.grad(nll.sum(), [m.delta_s for m in mods.values()])
    grads = {n: store.grads[n].detach() for n in mods}
    for n, g in grads.items():
        _check_finite(g, labels, f"delta_s gradient in module {n}")
    return grads


def per_completion_grads(model, tok, pairs, micro_batch: int | None = MICRO_BATCH) -> dict[str, torch.Tensor]:
    """name -> G [2 n_pairs, r] float32 (rows 2i hack, 2i+1 clean), batched (micro_batch rows at a time,
    sorted by length to limit padding; None = all completions in one forward/backward)."""
    prompts, comps, labels = examples(tok, pairs)
    B = len(prompts)
    order = sorted(range(B), key=lambda b: (len(prompts[b]), len(comps[b])))
    mb = B if not micro_batch else micro_batch
    with _GradMode(model) as gm:
        parts: dict[str, list[torch.Tensor]] = {n: [] for n in gm.mods}
        for s in range(0, B, mb):
            idx = order[s : s + mb]
            g = _batch_grads(model, gm.mods, [prompts[i] for i in idx], [comps[i] for i in idx],
                             [labels[i] for i in idx], tok.pad_token_id)  # fmt: skip
            for n, part in parts.items():
                part.append(g[n])
    inv = torch.empty(B, dtype=torch.long)
    inv[torch.tensor(order)] = torch.arange(B)
    return {n: torch.cat(p)[inv.to(p[0].device)] for n, p in parts.items()}  # back to pair order


def per_completion_grads_loop(model, tok, pairs) -> dict[str, torch.Tensor]:
    """Reference: the same G [2 n_pairs, r] with one forward/backward per completion."""
    prompts, comps, labels = examples(tok, pairs)
    with _GradMode(model) as gm:
        rows = [
            _batch_grads(model, gm.mods, [p], [c], [lab], tok.pad_token_id) for p, c, lab in zip(prompts, comps, labels)
        ]
    return {n: torch.cat([g[n] for g in rows]) for n in gm.mods}


# ---------------------------------------------------------------------------------------------------
# Extraction


def majority_sign(P: torch.Tensor) -> torch.Tensor:
    """P [n, k] projections -> [k] ±1: the sign most pairs agree on (ties: the sign of the sum, then +1)."""
    vote = (P > 0).sum(0) - (P < 0).sum(0)  # [k]
    tie = torch.where(P.sum(0) < 0, -1.0, 1.0).to(P.dtype)
    return torch.where(vote > 0, 1.0, torch.where(vote < 0, -1.0, tie)).to(P.dtype)


def hack_basis(D: torch.Tensor, top_k: int, tau_axis: float) -> tuple[torch.Tensor, torch.Tensor]:
    """D [n, r] -> (V [k_max, r] oriented hack-ward, S [k_max]) float32 on cpu; k_max = min(top_k, n, r).
    Rows with S_i/S_0 < tau_axis are zeroed (S is kept)."""
    n, r = D.shape
    k_max = min(top_k, n, r)
    _, S, Vh = torch.linalg.svd(D.detach().cpu().double(), full_matrices=False)
    V, S = Vh[:k_max], S[:k_max]  # [k_max, r], [k_max]
    V = V * majority_sign(D.detach().cpu().double() @ V.T)[:, None]
    keep = S / S[0] >= tau_axis if S[0] > 0 else torch.zeros_like(S, dtype=torch.bool)
    V[~keep] = 0.0
    return V.float().contiguous(), S.float().contiguous()


def extract(model, tok, pairs, top_k: int, tau_axis: float, micro_batch: int | None = MICRO_BATCH, grads=None):
    """-> (V: name -> [k_max, r], S: name -> [k_max]) float32 cpu. Leaves every .grad as it was (None stays
    None) and restores train/eval mode. `grads` may pass precomputed per_completion_grads."""
    if not pairs:
        raise VHackError("v_hack extraction got no pairs; check vhack.modes and the problem set")
    G = grads if grads is not None else per_completion_grads(model, tok, pairs, micro_batch)
    V, S = {}, {}
    for name, g in G.items():
        D = g[0::2] - g[1::2]  # [n_pairs, r]  hack − clean
        V[name], S[name] = hack_basis(D, top_k, tau_axis)
    return V, S
