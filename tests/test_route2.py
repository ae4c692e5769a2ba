"""projection=route2: the quarantine LoRA, the act and grad masks, refresh, config and the CLI arms."""

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

from projected_grpo import route2
from projected_grpo.adapter import adapter_modules, deployed, folded, reference_model
from projected_grpo.config import ConfigError, ProjectionMode, validate
from projected_grpo.loop import Trainer
from projected_grpo.pergrad import grouped_grads
from projected_grpo.projection import project_grads
from projected_grpo.tracking import PER_MODE, STEP_METRICS
from tests.conftest import REPO, compose
from tests.test_vhack import OVERRIDES, VOCAB, WordTok, problems3, wrapped_model

R2_KEYS = ["frac_flagged", "frac_flagged_s", "frac_flagged_t", "quarantine_norm"]


def ids(B=3, T=10, seed=1):
    return torch.randint(2, VOCAB, (B, T), generator=torch.Generator().manual_seed(seed))  # [B, T]


def randomize(params, seed, scale=0.1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params:
            p.copy_(torch.randn(p.shape, generator=g) * scale)


def knobs(model):
    return [m.delta_s for m in adapter_modules(model).values()]


def qparams(model):
    return [p for q in route2.quarantines(model).values() for p in (q.A_q, q.B_q)]


def set_act_mask(model, flag_all: bool):
    """Every quarantine flags every token (flag_all) or none, with masking on."""
    for q in route2.quarantines(model).values():
        q.v_act = torch.nn.functional.normalize(torch.ones(q.A_q.shape[1]), dim=0)
        q.act_mean, q.act_std, q.act_threshold = (-1e30 if flag_all else 1e30), 1.0, 1.0
        q.masking = True


def loss_of(model, x):
    return model(input_ids=x).logits.float().pow(2).mean()


# ---------------------------------------------------------------------------------------------------
# The quarantine adapter


def test_zero_init_then_ablated_quarantine_equals_the_model_without_it():
    model = wrapped_model()
    randomize(knobs(model), 0)
    x = ids()
    with torch.no_grad():
        base = model(input_ids=x).logits
        ref = None
        with reference_model(model):
            ref = model(input_ids=x).logits
        route2.attach(model, rank=4, seed=0)
        assert torch.equal(model(input_ids=x).logits, base)  # B_q = 0 at start
        randomize([q.B_q for q in route2.quarantines(model).values()], 1)
        kept = model(input_ids=x).logits
        assert not torch.allclose(kept, base)
        with deployed(model):
            assert torch.equal(model(input_ids=x).logits, base)
        with reference_model(model):
            assert torch.equal(model(input_ids=x).logits, ref)
        with folded(model):  # sampling folds B_q A_q with the knobs
            assert torch.allclose(model(input_ids=x).logits, kept, atol=1e-5)
        assert torch.equal(model(input_ids=x).logits, kept)  # contexts restore everything


def test_attach_is_seeded_and_once():
    a, b = wrapped_model(), wrapped_model()
    qa, qb = route2.attach(a, 4, seed=3), route2.attach(b, 4, seed=3)
    assert all(torch.equal(qa[n].A_q, qb[n].A_q) and not qa[n].B_q.any() for n in qa)
    with pytest.raises(route2.Route2Error, match="already has a quarantine"):
        route2.attach(a, 4, seed=3)


# ---------------------------------------------------------------------------------------------------
# The act mask


def grads_after(model, x, flag: bool | None):
    """δS and quarantine grads of one backward; flag None = masking off, True/False = all/no tokens flagged."""
    for p in knobs(model) + qparams(model):
        p.grad = None
    if flag is not None:
        set_act_mask(model, flag)
    loss_of(model, x).backward()
    for q in route2.quarantines(model).values():
        q.masking = False
    return [None if p.grad is None else p.grad.clone() for p in knobs(model)], [p.grad.clone() for p in qparams(model)]


def routed_model():
    """A wrapped model with random knobs and a rank-4 quarantine whose B_q is random (so both paths carry grads)."""
    model = wrapped_model()
    randomize(knobs(model), 0)
    route2.attach(model, 4, 0)
    randomize([q.B_q for q in route2.quarantines(model).values()], 1)
    return model


def test_act_mask_all_flagged_routes_everything_to_the_quarantine():
    model = routed_model()
    x = ids()
    g_s, g_q = grads_after(model, x, flag=True)
    assert all(g is None or not g.any() for g in g_s)
    assert all(g.abs().sum() > 0 for g in g_q)
    flags = [q.flags for q in route2.quarantines(model).values()]
    assert all(f is not None and bool(f.all()) for f in flags)


def test_act_mask_cin_is_measured_before_the_mask():
    """The per-source store (grouped_grads: cin_s, cin_t, route2's cin) sees the δS gradient the mask withholds."""
    # kills: capturing the δS gradient after the act mask (then cin == cout: all zero when every token is flagged)
    from projected_grpo.pergrad import grouped_grads

    model = routed_model()
    x = ids()
    unmasked, _ = grads_after(model, x, flag=None)
    for p in knobs(model):
        p.grad = None
    set_act_mask(model, True)
    with grouped_grads(model, groups=torch.zeros(x.shape[0], dtype=torch.long)) as store:
        loss_of(model, x).backward()
    for q in route2.quarantines(model).values():
        q.masking = False
    names = list(adapter_modules(model))
    assert all(m.delta_s.grad is None or not m.delta_s.grad.any() for m in adapter_modules(model).values())
    assert all(store.grads[n][0].abs().sum() > 0 for n in names)  # the gradient the mask withheld
    # the last module has no masked δS path downstream, so its pre-mask gradient is the unmasked one exactly
    # (upstream modules see a backward that the downstream masks already changed)
    last = max(names, key=lambda n: (int(n.split(".")[2]), "mlp.down_proj" in n))
    assert last.endswith("mlp.down_proj")
    assert torch.allclose(store.grads[last][0], unmasked[names.index(last)], rtol=1e-4, atol=1e-7)


def test_act_mask_nothing_flagged_gives_the_ordinary_gradients():
    model = routed_model()
    x = ids()
    s0, q0 = grads_after(model, x, flag=None)
    s1, q1 = grads_after(model, x, flag=False)
    assert all(g.abs().sum() > 0 for g in s0)
    assert all(torch.equal(a, b) for a, b in zip(s0, s1))
    assert all(torch.equal(a, b) for a, b in zip(q0, q1))


def test_act_mask_is_per_token():
    """Flagging the tokens of row 0 only: δS gets exactly the gradient of the other rows."""
    model = wrapped_model()
    randomize(knobs(model), 0)
    route2.attach(model, 4, 0)
    x = ids(B=2)
    loss_row = lambda b: model(input_ids=x[b : b + 1]).logits.float().pow(2).mean()
    for p in knobs(model):
        p.grad = None
    loss_row(1).backward()
    expect = [p.grad.clone() for p in knobs(model)]
    for p in knobs(model):
        p.grad = None
    for q in route2.quarantines(model).values():  # flag by a hand-made rule: row 0 only
        q.masking, q.v_act = True, torch.zeros(q.A_q.shape[1])
        q.flag = lambda x_: torch.arange(x_.shape[0])[:, None].expand(x_.shape[:-1]) == 0
    (model(input_ids=x).logits.float().pow(2).mean(1).mean(1).sum()).backward()  # rows independent: sum of rows
    got = [p.grad for p in knobs(model)]
    # the batched loss per row is the same mean as loss_row(b)
    assert all(torch.allclose(a, b, atol=1e-6, rtol=1e-4) for a, b in zip(got, expect))


# ---------------------------------------------------------------------------------------------------
# Route2 with real mask pairs (3 embedded problems, stub tokenizer, 1-layer random Qwen3)


def make_route2(mask: str, *over):
    cfg = compose(OVERRIDES + ["projection=route2", f"projection.route2.mask={mask}", *over])
    validate(cfg)
    model = wrapped_model()
    return route2.Route2(cfg.projection.route2, cfg.vhack, model, WordTok(3), problems3()), model


@pytest.mark.parametrize("mask", ["grad", "act"])
def test_mask_directions_are_unit_and_per_module(mask):
    r2, model = make_route2(mask)
    mods = adapter_modules(model)
    assert set(r2.v) == set(mods)
    for n, v in r2.v.items():
        assert v.shape == ((mods[n].r,) if mask == "grad" else (mods[n].in_features,))
        assert abs(float(v.norm()) - 1) < 1e-4, n
    if mask == "act":
        assert all(q.act_std > 0 and q.act_threshold == 2.0 for q in r2.q.values())


def test_grad_mask_withholds_exactly_each_rollouts_hackward_component():
    r2, model = make_route2("grad")
    randomize(knobs(model), 0)
    mods = adapter_modules(model)
    x = ids(B=4, seed=5)
    G = x.shape[0]
    # per-rollout δS gradients by a loop of single-row backwards: the reference
    per_row = []
    for b in range(G):
        g = torch.autograd.grad(loss_of(model, x[b : b + 1]), knobs(model))
        per_row.append(dict(zip(mods, g)))
    # the loop's plumbing: one backward, one group per rollout after the student/teacher columns
    for p in knobs(model):
        p.grad = None
    is_teacher = [False, False, True, True]
    with grouped_grads(model, groups=torch.tensor([0, 1])) as store:
        store.onehot = r2.group_columns(torch.nn.functional.one_hot(torch.tensor(is_teacher).long(), 2).float(), 0, 1)
        model(input_ids=x).logits.float().pow(2).mean((1, 2)).sum().backward()  # = Σ_b loss_of(row b)
    rollout = SimpleNamespace(is_teacher=is_teacher, exploited=[True, False, True, False])
    r2.begin_step()
    r2.after_backward(store.grads, [rollout])
    full = {n: m.delta_s.grad.clone() for n, m in mods.items()}
    withheld = r2.withhold(mods)
    n_fired = 0
    for n, m in mods.items():
        v = r2.v[n]
        c = torch.stack([v @ per_row[b][n] for b in range(G)])  # [G]
        n_fired += int((c > 0).sum())
        expect = sum(per_row[b][n] - torch.relu(c[b]) * v for b in range(G))
        assert torch.allclose(m.delta_s.grad, expect, atol=1e-6, rtol=1e-4), n
        assert torch.allclose(withheld[n], full[n] - m.delta_s.grad, atol=1e-7)
        assert torch.allclose(r2.rollout_grads[n], torch.stack([per_row[b][n] for b in range(G)]), atol=1e-6, rtol=1e-4)
    assert 0 < n_fired < G * len(mods)  # one-sided: only rollouts that push hack-ward lose anything
    m = r2.metrics()
    assert m["frac_flagged"] == pytest.approx(n_fired / (G * len(mods)))
    assert m["frac_flagged_s"] is not None and m["frac_flagged_hack"] is not None


@pytest.mark.parametrize("mask", ["grad", "act"])
def test_refresh_keeps_the_quarantine_and_changes_the_mask(mask):
    r2, model = make_route2(mask)
    randomize([q.B_q for q in r2.q.values()], 2)
    q_before = [p.detach().clone() for p in r2.parameters()]
    v_before = {n: v.clone() for n, v in r2.v.items()}
    randomize(knobs(model), 3, scale=1.0)  # training moved δS
    ov = r2.refresh()
    assert all(torch.equal(a, b) for a, b in zip(q_before, r2.parameters()))
    assert any(not torch.allclose(v_before[n], r2.v[n], atol=1e-4) for n in r2.v)
    assert r2.mask_overlap == ov and 0.0 <= ov <= 1.0 + 1e-6
    # the new mask was extracted with the quarantine ablated
    with deployed(model):
        rebuilt = r2.build()
    rebuilt = rebuilt if mask == "grad" else {n: t[0] for n, t in rebuilt.items()}
    assert all(torch.allclose(rebuilt[n], r2.v[n], atol=1e-6) for n in r2.v)


def test_state_dict_round_trip():
    r2, _ = make_route2("act")
    randomize([q.B_q for q in r2.q.values()], 2)
    state = r2.state_dict()
    r3, _ = make_route2("act")
    r3.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(r2.parameters(), r3.parameters()))
    assert all(r2.q[n].act_mean == r3.q[n].act_mean and torch.equal(r2.v[n], r3.v[n]) for n in r2.v)


def test_l1_penalty_trains_only_the_quarantine():
    r2, model = make_route2("grad", "projection.route2.l1=0.5")
    randomize([q.B_q for q in r2.q.values()], 2)
    x = ids()
    model(input_ids=x)
    pen = r2.l1_penalty(torch.ones_like(x))
    assert float(pen.detach()) > 0
    for p in knobs(model) + r2.parameters():
        p.grad = None
    pen.backward()
    assert all(p.grad is None for p in knobs(model))
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in r2.parameters())


# ---------------------------------------------------------------------------------------------------
# The loop's refresh schedule, config, other arms


class ScheduleStub(Trainer):
    """Trainer.train_step with every heavy part stubbed: records the steps at which refresh fires."""

    def __init__(self, n: int):  # no Trainer.__init__: no model, no grader
        self.cfg = OmegaConf.create({"vhack": {"refresh_every": n}})
        self.model, self.step, self.fired = torch.nn.Linear(1, 1), 0, []
        self.sched = SimpleNamespace(get_last_lr=lambda: [0.1], step=lambda: None)
        self.t, self.v, self.modules, self.monitor = SimpleNamespace(updates_per_batch=1), {}, {}, None
        self.drift = SimpleNamespace(add=lambda updates: None)  # drift_cc: nothing to track without modules

    def rollouts(self, timing):
        return []

    def backward(self, rollouts, old_logps=None):
        return {"loss": 0.0, "kl": 0.0, "frac_zero_var": 0.0, "g_s": {}, "g_t": {}, "teacher_in_loss": False}

    def optimizer_step(self, b=None):
        return {"sec_projection": 0.0}

    def refresh(self):
        self.fired.append(self.step)

    def metrics_row(self, *a):
        return {}


@pytest.mark.parametrize("n,steps,fired", [(3, 7, [3, 6]), (1, 3, [1, 2, 3]), (0, 4, [])])
def test_refresh_fires_exactly_at_multiples_of_refresh_every(n, steps, fired):
    t = ScheduleStub(n)
    for _ in range(steps):
        t.train_step()
    assert t.fired == fired


@pytest.mark.parametrize(
    "over,key",
    [
        ("projection.route2.rank=0", "projection.route2.rank"),
        ("projection.route2.l1=-1", "projection.route2.l1"),
        ("projection.route2.act_threshold=0", "projection.route2.act_threshold"),
        ("projection.space=update", "projection.space"),
    ],
)
def test_config_validation(over, key):
    with pytest.raises(ConfigError, match=key):
        validate(compose(["projection=route2", over]))


def test_config_defaults_and_arms():
    cfg = compose(["projection=route2"])
    r = cfg.projection.route2
    assert cfg.projection.mode == ProjectionMode.route2
    assert (r.rank, r.l1, r.mask.value, r.act_threshold) == (8, 0.0, "grad", 2.0)
    for arm, mask in (("route2_grad", "grad"), ("route2_act", "act")):
        c = compose([f"arm={arm}"])
        validate(c)
        assert c.projection.mode == ProjectionMode.route2 and c.projection.route2.mask.value == mask
    assert compose([]).projection.route2.rank == 8  # other arms carry the (unused) defaults


def test_project_grads_removes_nothing_under_route2():
    g = {"m": torch.tensor([1.0, -2.0, 3.0])}
    v = {"m": torch.tensor([[1.0, 0.0, 0.0]])}
    out, res = project_grads(g, v, compose(["projection=route2"]).projection)
    assert torch.equal(out["m"], g["m"]) and res.cin > 0 and not res.removed


# ---------------------------------------------------------------------------------------------------
# Through the CLI

QUICK = ["trainer.max_new_tokens=16", "trainer.group=4", "trainer.prompts_per_step=1", "trainer.eval_prompts_per_mode=1",
         "trainer.eval_every=0"]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("over", [["projection.route2.mask=grad"], ["projection.route2.mask=act", "vhack.refresh_every=1"]],
                         ids=["grad", "act_refresh"])  # fmt: skip
def test_cli_route2(tmp_path, over):
    cmd = [
        sys.executable,
        "train.py",
        f"hydra.run.dir={tmp_path}",
        "projection=route2",
        "trainer.steps=3",
        *QUICK,
        *over,
    ]
    r = subprocess.run(cmd, check=False, cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in rows] == [1, 2, 3]
    for x in rows:
        assert set(x) == set(STEP_METRICS + PER_MODE)
        assert all(x[k] is not None for k in R2_KEYS), x
        assert (x["mask_overlap"] is not None) == ("vhack.refresh_every=1" in over)
    assert rows[-1]["quarantine_norm"] > 0
    s = json.loads((tmp_path / "summary.json").read_text())
    assert all("ablated" in s["deploy"][x] and "kept" in s["deploy"][x] for x in ("heldout", "train"))


@pytest.mark.parametrize("mask", ["grad", "act"])
def test_random_control_mask_is_seeded_and_unit(mask):
    a, _ = make_route2(mask, "vhack.source=random")
    b, _ = make_route2(mask, "vhack.source=random")
    real, _ = make_route2(mask)
    assert all(torch.equal(a.v[n], b.v[n]) and abs(float(a.v[n].norm()) - 1) < 1e-4 for n in a.v)
    assert all(route2.overlap({n: a.v[n]}, {n: real.v[n]}) < 0.9 for n in a.v)


def test_trainer_checkpoint_resumes_the_quarantine_and_mask(tmp_path):
    """A route2 Trainer saved after step 1 and resumed in the same run dir continues exactly like the original."""
    from projected_grpo.setup import build_setup

    over = [*QUICK, "trainer.steps=3", "projection=route2", "projection.route2.mask=act", "vhack.refresh_every=1"]
    cfg = compose(over)
    a = Trainer(cfg, build_setup(cfg, tmp_path))
    try:
        a.train_step()
        a.save_checkpoint()
        b = Trainer(cfg, build_setup(cfg, tmp_path))
        try:
            assert b.step == 1 and len(b.opt.param_groups) == 3
            assert all(torch.equal(p, q) for p, q in zip(a.route2.parameters(), b.route2.parameters()))
            assert all(torch.equal(a.route2.v[n], b.route2.v[n]) for n in a.route2.v)
            ra, rb = a.train_step(), b.train_step()
            assert {k: v for k, v in ra.items() if not k.startswith("sec_")} == {
                k: v for k, v in rb.items() if not k.startswith("sec_")
            }
        finally:
            b.close()
    finally:
        a.close()


def test_kl_backward_with_the_quarantine_in_float32(tmp_path):
    """projection=route2 with trainer.beta > 0 in float32: the reference forward zeroes A_q/B_q in place, which
    used to break the policy graph's backward ("modified by an inplace operation")."""
    # kills: computing the reference log-probs after the policy forward in Trainer.backward
    from projected_grpo.setup import build_setup
    from tests.test_loop import fixed_rollouts

    cfg = compose([*QUICK, "trainer.steps=1", "projection=route2", "trainer.beta=0.01", "model.dtype=float32"])
    t = Trainer(cfg, build_setup(cfg, tmp_path))
    try:
        b = t.backward(fixed_rollouts(t, [[1.25, 0.25, 1.25, 0.0], [0.25, 1.25, 0.0, 0.25]]))
        assert b["kl"] >= 0 and any(p.grad is not None and p.grad.any() for p in t.route2.parameters())
    finally:
        t.close()
