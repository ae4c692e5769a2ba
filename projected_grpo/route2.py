"""projection=route2: gradient routing (Cloud et al. 2024; SGTM) into a distinct-basis quarantine adapter.

Per wrapped module a LoRA pair, the quarantine, sits in the forward pass next to the δS path:
    y = W x + b + U ((Vh x) ⊙ δS) + B_q A_q x        B_q [d_out, r_q] zero-init, A_q [r_q, d_in] seeded
so the model is unchanged at start. The quarantine always trains on the full loss gradient (autograd);
a weak mask decides which computation may update the main knob δS:

  mask=grad  v_grad [r] per module = the normalised mean over the mask pairs of g_hack − g_clean (δS gradients
             of each completion's mean NLL, vhack.per_completion_grads). Per rollout i, with δS gradient g_i
             (pergrad.grouped_grads, one group per rollout): c_i = v_grad·g_i and
                 δS.grad  <-  δS.grad − Σ_i relu(c_i) v_grad        (one-sided, like erase)
             A rollout counts as flagged in a module when c_i > 0.
  mask=act   v_act [d_in] per module = the normalised mean difference of the module's INPUT activations over
             completion tokens, hack − clean. Per token: z = (x·v_act − μ_clean) / σ_clean (μ, σ of the clean
             completion tokens' projection, measured when the mask is built) and the token is flagged when
             z > act_threshold. A flagged token's δS-path output is detached (torch.where(flag, z.detach(), z)),
             so its gradient reaches the quarantine (and the base path upstream) but not δS, nor anything
             upstream through the δS path. Unflagged tokens update both. The mask is per module.

Deployment (adapter.deployed) zeroes the quarantine, so the deployed model is exactly W + U diag(δS) Vh;
adapter.reference_model zeroes it with both knobs. Sampling folds B_q A_q into W with the knobs
(adapter.folded), so rollouts are drawn from the model that is trained.
Mask pairs come from vhack.make_pairs (so they respect vhack.modes, the weak detector, and vhack.source;
source=random gives a seeded random unit direction per module). With vhack.refresh_every=N the mask is
re-extracted with the quarantine ablated at optimizer steps N, 2N, ...; `mask_overlap` logs mean |<new, old>|.
The oracle `exploited` flag only feeds the flag-rate diagnostics; nothing that trains reads it.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from projected_grpo import vhack as vhack_mod
from projected_grpo.adapter import AntiPaSTOLinear, adapter_modules, deployed
from projected_grpo.config import Route2Mask, VSource
from projected_grpo.tokens import pack

log = logging.getLogger(__name__)
MICRO_BATCH = vhack_mod.MICRO_BATCH
CATEGORIES = ("s", "t", "hack", "clean")  # student / teacher rollouts; exploited / not (oracle, logging only)


class Route2Error(ValueError):
    """A route2 setup that cannot work; says how to fix it."""


def _seed(seed: int, name: str) -> int:
    return int(hashlib.sha256(f"route2|{seed}|{name}".encode()).hexdigest()[:15], 16)


def unit(v: torch.Tensor) -> torch.Tensor:
    """v / ||v|| (zeros stay zeros: nothing is ever flagged along a zero direction)."""
    n = v.norm()
    return v / n if n > 0 else torch.zeros_like(v)


# ---------------------------------------------------------------------------------------------------
# The quarantine adapter


class Quarantine(nn.Module):
    """B_q A_q x, plus the activation mask of the δS path (mask=act). Attached as AntiPaSTOLinear.quarantine."""

    def __init__(self, d_in: int, d_out: int, rank: int, seed: int, name: str, device, l1: float = 0.0):
        super().__init__()
        g = torch.Generator().manual_seed(_seed(seed, name))
        A = torch.randn(rank, d_in, generator=g) / math.sqrt(d_in)  # [r_q, d_in]
        self.A_q = nn.Parameter(A.to(device))
        self.B_q = nn.Parameter(torch.zeros(d_out, rank, device=device))  # [d_out, r_q]
        self.l1 = l1
        self.masking = False  # the act mask applies only inside Route2.masking() (the train loss backward)
        self.v_act: torch.Tensor | None = None  # [d_in]
        self.act_mean = 0.0  # μ of the clean completion tokens' projection on v_act
        self.act_std = 1.0  # σ of the same
        self.act_threshold = math.inf
        self.flags: torch.Tensor | None = None  # [B, T] bool, of the last masked forward
        self.l1_rows: torch.Tensor | None = None  # [B, T] ||B_q A_q x||_1 on a detached x, of the last forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., d_in] -> [..., d_out]."""
        out = F.linear(F.linear(x, self.A_q.to(x.dtype)), self.B_q.to(x.dtype))
        if self.l1 > 0 and torch.is_grad_enabled():  # the penalty trains the quarantine only, never δS upstream
            xd = x.detach()
            self.l1_rows = F.linear(F.linear(xd, self.A_q.to(x.dtype)), self.B_q.to(x.dtype)).float().abs().sum(-1)
        return out

    def flag(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., d_in] -> [...] bool: the token's activation lies act_threshold clean-stds past the clean mean."""
        p = x.detach().float() @ self.v_act  # [...]
        return (p - self.act_mean) > self.act_threshold * self.act_std

    def route(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """z [..., r] of the δS path -> the same values, detached on flagged tokens (mask=act, training only)."""
        if not self.masking or self.v_act is None or not z.requires_grad:
            return z
        flag = self.flag(x)  # [...]
        self.flags = flag
        return torch.where(flag[..., None], z.detach(), z)

    def weight_delta(self) -> torch.Tensor:
        return self.B_q.float() @ self.A_q.float()  # [d_out, d_in]

    def norm(self) -> float:
        """||B_q A_q||_F via tr((B_qᵀB_q)(A_q A_qᵀ)), without forming the [d_out, d_in] product."""
        B, A = self.B_q.detach().float(), self.A_q.detach().float()
        return float(((B.T @ B) * (A @ A.T)).sum().clamp(min=0).sqrt())


def attach(model: nn.Module, rank: int, seed: int, l1: float = 0.0) -> dict[str, Quarantine]:
    """Add a Quarantine to every AntiPaSTOLinear (B_q = 0: the model is unchanged). Returns name -> Quarantine."""
    mods = adapter_modules(model)
    if not mods:
        raise Route2Error("the model has no AntiPaSTO modules; wrap it first (adapter.wrap_model)")
    out = {}
    for name, m in mods.items():
        if m.quarantine is not None:
            raise Route2Error(f"module {name} already has a quarantine; attach once per model")
        dev = m.weight.device
        m.quarantine = Quarantine(m.in_features, m.out_features, rank, seed, name, dev, l1)
        out[name] = m.quarantine
    return out


def quarantines(model: nn.Module) -> dict[str, Quarantine]:
    return {n: m.quarantine for n, m in adapter_modules(model).items() if m.quarantine is not None}


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
    prompts, comps, _ = vhack_mod._examples(tok, pairs)  # rows 2i hack, 2i+1 clean
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


# ---------------------------------------------------------------------------------------------------
# The per-run router


class Route2:
    """Owns the quarantines and the mask of one run. The train loop calls, per step:
    begin_step; per prompt: group_columns (grad), forward under masking(), record (act), l1_penalty;
    after_backward (grad); withhold (after the cin measurement, before clipping); metrics."""

    def __init__(self, rcfg, vcfg, model, tok, problems):
        self.mask = Route2Mask(getattr(rcfg.mask, "value", rcfg.mask))
        self.rcfg, self.vcfg, self.model, self.tok, self.problems = rcfg, vcfg, model, tok, problems
        self.q = attach(model, int(rcfg.rank), int(rcfg.seed), float(rcfg.l1))
        self.modules = adapter_modules(model)
        self.v: dict[str, torch.Tensor] = {}  # name -> v_grad [r] | v_act [d_in]
        self.mask_overlap: float | None = None
        self.stats = FlagStats()
        self.rollout_grads: dict[str, torch.Tensor] = {}  # name -> [P*G, r] per-rollout δS gradients (grad)
        self.set_mask(self.build())

    def parameters(self) -> list[nn.Parameter]:
        return [p for q in self.q.values() for p in (q.A_q, q.B_q)]

    # -- the mask --------------------------------------------------------------------------------

    def build(self) -> dict:
        """Extract the mask from the current model (the caller ablates the quarantine where it matters)."""
        random = VSource(self.vcfg.source) == VSource.random
        if random and self.mask == Route2Mask.grad:
            return random_directions({n: m.r for n, m in self.modules.items()}, int(self.vcfg.seed))
        pairs = mask_pairs(self.vcfg, self.problems)
        if self.mask == Route2Mask.grad:
            return grad_directions(self.model, self.tok, pairs)
        dev = {n: m.weight.device for n, m in self.modules.items()}
        v = None
        if random:  # random control: a random direction, calibrated on the clean tokens like the real one
            v = {n: t.to(dev[n]) for n, t in random_directions({n: m.in_features for n, m in self.modules.items()},
                                                               int(self.vcfg.seed)).items()}  # fmt: skip
        return act_directions(self.model, self.tok, pairs, v=v)

    def set_mask(self, built: dict) -> None:
        if self.mask == Route2Mask.grad:
            self.v = {n: t.to(self.modules[n].weight.device) for n, t in built.items()}
            return
        for n, (v, mu, sd) in built.items():
            q = self.q[n]
            q.v_act, q.act_mean, q.act_std = v.to(q.B_q.device), mu, sd
            q.act_threshold = float(self.rcfg.act_threshold)
        self.v = {n: q.v_act for n, q in self.q.items()}

    def refresh(self) -> float:
        """Re-extract the mask from the current model with the quarantine (and delta_s_hack) ablated;
        the quarantine's values are untouched. Returns (and logs) the overlap with the old mask."""
        old = {n: t.detach().clone() for n, t in self.v.items()}
        with deployed(self.model):
            built = self.build()
        self.set_mask(built)
        self.mask_overlap = overlap(old, self.v)
        return self.mask_overlap

    # -- per step --------------------------------------------------------------------------------

    def begin_step(self) -> None:
        self.stats = FlagStats()
        self.rollout_grads = {}

    @contextmanager
    def masking(self) -> Iterator[None]:
        """The act mask applies to forwards inside this context (the GRPO loss), never to extraction or eval."""
        on = self.mask == Route2Mask.act
        for q in self.q.values():
            q.masking, q.flags = on, None
        try:
            yield
        finally:
            for q in self.q.values():
                q.masking, q.flags = False, None

    def group_columns(self, onehot: torch.Tensor, prompt: int, n_prompts: int) -> torch.Tensor:
        """onehot [G, 2] (student/teacher) -> [G, 2 + P*G] with one extra group per rollout (mask=grad)."""
        if self.mask != Route2Mask.grad:
            return onehot
        G = onehot.shape[0]
        cols = torch.zeros(G, n_prompts * G)
        cols[:, prompt * G : (prompt + 1) * G] = torch.eye(G)
        return torch.cat([onehot, cols], 1)

    def record(self, cmask: torch.Tensor, is_teacher: list[bool], exploited: list[bool]) -> None:
        """mask=act: count the flagged completion tokens of the last forward, per module (diagnostics only)."""
        if self.mask != Route2Mask.act:
            return
        c = cmask.bool()  # [G, T]
        for n, q in self.q.items():
            if q.flags is None:
                raise Route2Error(
                    f"route2 mask=act: module {n} produced no flags; was the forward run under masking()?"
                )
            self.stats.add((q.flags & c).sum(1), c.sum(1), is_teacher, exploited)
            q.flags = None

    def l1_penalty(self, cmask: torch.Tensor) -> torch.Tensor | float:
        """l1 · Σ_modules mean over completion tokens of ||B_q A_q x||_1 of the last forward (0 when l1 = 0)."""
        l1 = float(self.rcfg.l1)
        if l1 == 0:
            return 0.0
        m = cmask.float()  # [G, T]
        total = 0.0
        for q in self.q.values():
            if q.l1_rows is None:
                raise Route2Error("route2 l1: no quarantine output recorded; call l1_penalty right after the forward")
            total = total + (q.l1_rows * m).sum() / m.sum().clamp(min=1)
            q.l1_rows = None
        return l1 * total

    def after_backward(self, grads: dict[str, torch.Tensor], rollouts) -> None:
        """mask=grad: keep the per-rollout δS gradients (columns 2: of the store) and count flagged rollouts."""
        if self.mask != Route2Mask.grad:
            return
        self.rollout_grads = {n: g[2:] for n, g in grads.items()}  # [P*G, r]
        is_teacher = [te for r in rollouts for te in r.is_teacher]
        exploited = [ex for r in rollouts for ex in r.exploited]  # oracle: logging only
        for n, g in self.rollout_grads.items():
            active = (g != 0).any(1)  # rollouts of zero-variance groups had no backward
            fired = (g @ self.v[n].to(g)) > 0
            self.stats.add((fired & active).float(), active.float(), is_teacher, exploited)

    def withhold(self, modules: dict[str, AntiPaSTOLinear]) -> dict[str, torch.Tensor]:
        """mask=grad: delta_s.grad -= Σ_i relu(v_grad·g_i) v_grad per module; returns name -> withheld [r]."""
        out = {}
        if self.mask != Route2Mask.grad:
            return out
        for n, g in self.rollout_grads.items():
            v = self.v[n].to(g)  # [r]
            out[n] = torch.relu(g @ v).sum() * v  # [r]
            m = modules[n]
            m.delta_s.grad = m.delta_s.grad - out[n].to(m.delta_s.grad)
        return out

    def metrics(self) -> dict:
        return {
            **self.stats.fractions(),
            "quarantine_norm": sum(q.norm() for q in self.q.values()),
            "mask_overlap": self.mask_overlap,
        }

    # -- checkpoints -----------------------------------------------------------------------------

    def state_dict(self) -> dict:
        return {
            "quarantine": {n: (q.A_q.detach().clone(), q.B_q.detach().clone()) for n, q in self.q.items()},
            "act": {n: (q.v_act, q.act_mean, q.act_std) for n, q in self.q.items()}
            if self.mask == Route2Mask.act
            else None,
            "v": self.v,
            "mask_overlap": self.mask_overlap,
        }

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            for n, (A, B) in state["quarantine"].items():
                self.q[n].A_q.copy_(A)
                self.q[n].B_q.copy_(B)
        self.set_mask(state["act"] if self.mask == Route2Mask.act else state["v"])
        self.mask_overlap = state["mask_overlap"]
