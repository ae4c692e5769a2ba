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

Modules: quarantine (the LoRA pair and its token-mask hook), masks (mask directions, flag stats), router (Route2, the
per-run object the train step calls). The names below are the public API.
"""

from projected_grpo.route2.masks import (
    CATEGORIES,
    FlagStats,
    act_directions,
    grad_directions,
    mask_pairs,
    overlap,
    random_directions,
)
from projected_grpo.route2.quarantine import Quarantine, Route2Error, attach, quarantines, unit
from projected_grpo.route2.router import Route2

__all__ = [
    "CATEGORIES", "FlagStats", "Quarantine", "Route2", "Route2Error", "act_directions", "attach", "grad_directions",
    "mask_pairs", "overlap", "quarantines", "random_directions", "unit",
]  # fmt: skip
