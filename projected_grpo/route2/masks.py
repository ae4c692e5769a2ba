"""route2's mask directions (grad: v_grad over δS gradients; act: v_act over input activations, with the clean
tokens' mean and std) and the flag-rate diagnostics (oracle labels: logging only)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from projected_grpo import vhack as vhack_mod
from projected_grpo.adapter import adapter_modules
from projected_grpo.config import VSource
from projected_grpo.route2.quarantine import Route2Error, unit
from projected_grpo.tokens import pack

MICRO_BATCH = vhack_mod.MICRO_BATCH
CATEGORIES = ("s", "t", "hack", "clean")  # student / teacher rollouts; exploited / not (oracle, logging only)

# ---------------------------------------------------------------------------------------------------
# Mask directions


def mask_pairs(vcfg, problems) -> list:
    """The (hack, clean) pairs the masks are built from: vhack.make_pairs, restricted to vhack.modes."""
    source = VSource(vcfg.source)
    file_source = VSource.real if source == VSource.random else source
    pairs, _ = vhack_mod.make_pairs(vcfg, problems, file_source)
    return pairs


def grad_directions(model, tok, pairs, micro_batch: int | None = MICRO_BATCH) -> dict[str, torch.Tensor]:
    """name -> v_grad [r]: unit(mean over pairs of g_hack − g_clean), float32 on the module's device."""
    if not pairs:
        raise Route2Error("route2 mask=grad got no mask pairs; check vhack.modes and the problem set")
    G = vhack_mod.per_completion_grads(model, tok, pairs, micro_batch)  # name -> [2 n, r]
    return {n: unit((g[0::2] - g[1::2]).mean(0).float()) for n, g in G.items()}


@contextmanager
def _inputs(model) -> Iterator[dict[str, torch.Tensor]]:
    """Capture every AntiPaSTOLinear's input x [B, T, d_in] of the next forward."""
    seen: dict[str, torch.Tensor] = {}
    handles = [
        m.register_forward_pre_hook(lambda mod, args, n=n: seen.__setitem__(n, args[0].detach()))
        for n, m in adapter_modules(model).items()
    ]
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def _completion_activations(
    model, tok, pairs, micro_batch: int | None
) -> Iterator[tuple[dict, torch.Tensor, torch.Tensor]]:
    """Yields (name -> x [b, T, d_in], cmask [b, T] bool, is_hack [b] bool) over micro-batches of the pairs."""
    prompts, comps, _ = vhack_mod.examples(tok, pairs)  # rows 2i hack, 2i+1 clean
    dev = next(model.parameters()).device
    mb = micro_batch or len(prompts)
    training = model.training
    model.eval()
    try:
        for s in range(0, len(prompts), mb):
            ids, attn, cmask = (t.to(dev) for t in pack(prompts[s : s + mb], comps[s : s + mb], tok.pad_token_id))
            pos = (attn.cumsum(1) - 1).clamp(min=0)
            with _inputs(model) as xs:
                model(input_ids=ids, attention_mask=attn, position_ids=pos)
            is_hack = (torch.arange(s, s + ids.shape[0], device=dev) % 2) == 0
            yield xs, cmask.bool(), is_hack
    finally:
        model.train(training)


def act_directions(
    model, tok, pairs, micro_batch: int | None = MICRO_BATCH, v: dict[str, torch.Tensor] | None = None
) -> dict[str, tuple[torch.Tensor, float, float]]:
    """name -> (v_act [d_in], μ_clean, σ_clean). v_act = unit(mean over pairs of mean_hack_tokens(x) −
    mean_clean_tokens(x)) unless given (`v`, the random control); μ, σ of x·v_act over all clean completion
    tokens. Two no-grad passes (one with `v` given)."""
    if not pairs:
        raise Route2Error("route2 mask=act got no mask pairs; check vhack.modes and the problem set")
    if v is None:
        rows: dict[str, list[torch.Tensor]] = {}
        for xs, cmask, _ in _completion_activations(model, tok, pairs, micro_batch):
            m = cmask.float()  # [b, T]
            for n, x in xs.items():  # per-row mean over completion tokens: [b, d_in]
                rows.setdefault(n, []).append((x.float() * m[..., None]).sum(1) / m.sum(1, keepdim=True).clamp(min=1))
        v = {n: unit((torch.cat(r)[0::2] - torch.cat(r)[1::2]).mean(0)) for n, r in rows.items()}
    mom = {n: torch.zeros(3, dtype=torch.float64) for n in v}  # count, sum, sum of squares
    for xs, cmask, is_hack in _completion_activations(model, tok, pairs, micro_batch):
        clean = cmask & ~is_hack[:, None]  # [b, T]
        for n, x in xs.items():
            p = (x.float() @ v[n])[clean].double()  # [n_clean_tokens]
            mom[n] += torch.stack(
                [torch.tensor(float(p.numel()), dtype=torch.float64), p.sum().cpu(), p.pow(2).sum().cpu()]
            )
    out = {}
    for n, (cnt, s1, s2) in mom.items():
        if cnt < 2:
            raise Route2Error("route2 mask=act needs >= 2 clean completion tokens to measure the threshold's std")
        mu = float(s1 / cnt)
        sd = float((s2 / cnt - mu * mu).clamp(min=0).sqrt())
        out[n] = (v[n], mu, sd)
    return out


def random_directions(dims: dict[str, int], seed: int) -> dict[str, torch.Tensor]:
    """The vhack.source=random control: a seeded random unit vector per module."""
    return {n: vhack_mod.random_orthonormal(1, d, seed, f"route2|{n}")[0] for n, d in dims.items()}


def overlap(old: dict[str, torch.Tensor], new: dict[str, torch.Tensor]) -> float:
    """Mean |<v_new, v_old>| over modules present in both (unit vectors; zero vectors count as 0)."""
    vals = [float((old[n].float() * new[n].float().to(old[n].device)).sum().abs()) for n in sorted(set(old) & set(new))]
    return sum(vals) / len(vals) if vals else 0.0


# ---------------------------------------------------------------------------------------------------
# Flag-rate diagnostics (oracle labels: logging only)


class FlagStats:
    """flagged / total counts per category (s, t, hack, clean), summed over modules."""

    def __init__(self):
        self.flagged = dict.fromkeys(CATEGORIES, 0.0)
        self.total = dict.fromkeys(CATEGORIES, 0.0)

    def add(self, flagged: torch.Tensor, total: torch.Tensor, is_teacher: list[bool], exploited: list[bool]) -> None:
        """flagged, total: [B] counts of one module for the B rollouts."""
        f, t = flagged.double().cpu().tolist(), total.double().cpu().tolist()
        for b, (te, ex) in enumerate(zip(is_teacher, exploited)):
            for cat in ("t" if te else "s", "hack" if ex else "clean"):
                self.flagged[cat] += f[b]
                self.total[cat] += t[b]

    def fractions(self) -> dict[str, float | None]:
        out = {
            f"frac_flagged_{c}": (self.flagged[c] / self.total[c] if self.total[c] > 0 else None) for c in CATEGORIES
        }
        n = self.total["s"] + self.total["t"]
        out["frac_flagged"] = (self.flagged["s"] + self.flagged["t"]) / n if n > 0 else None
        return out
