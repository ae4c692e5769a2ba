"""The weight-delta hypothesis test: planted deltas, the ceiling bound, the random null, family balance, the CLI."""

import csv
import math

import pytest
import torch

from projected_grpo.hypotheses.score import COMBINED, ScoreError, ceiling_basis, random_bases, score

R = {"q_proj": 64, "down_proj": 32}  # family -> r (the knob dimension of its modules)
LAYERS = 3


def names():
    return [f"model.layers.{i}.{f}" for i in range(LAYERS) for f in R]


def orthonormal(k, r, seed):
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(r, k, generator=g, dtype=torch.float64))
    return Q.T.float()  # [k, r]


def planted(k=4, frac=0.6, seed=0, spread=True):
    """A known basis B (k rows per module) and a delta with exactly `frac` of each module's squared norm in span(B)."""
    g = torch.Generator().manual_seed(seed)
    B, delta = {}, {}
    for i, n in enumerate(names()):
        r = R[n.rsplit(".", 1)[-1]]
        Q = orthonormal(r, r, seed + i).double()  # a full orthonormal frame of R^r
        B[n] = Q[:k].float()
        inside = torch.randn(k, generator=g, dtype=torch.float64) @ Q[:k]
        outside = torch.randn(r - k, generator=g, dtype=torch.float64) @ Q[k:]
        scale = 10.0**i if spread else 1.0  # very different module norms: family balance must not care
        delta[n] = (
            scale * (math.sqrt(frac) * inside / inside.norm() + math.sqrt(1 - frac) * outside / outside.norm())
        ).float()
    return B, delta


def test_planted_basis_ranks_first_at_r_over_k_times_fraction():
    # kills: dividing by r/k instead of k/r, dropping the square, scoring against a non-planted family mix
    k, frac = 4, 0.6
    B, delta = planted(k, frac)
    cands = {
        "known": B,
        "random": {n: orthonormal(k, t.shape[0], 100 + i) for i, (n, t) in enumerate(delta.items())},
        "half": {n: torch.cat([b[:2], orthonormal(k, b.shape[1], 7)[:2]]) for n, b in B.items()},
    }
    cands["half"] = {n: torch.linalg.qr(v.double().T)[0].T.float() for n, v in cands["half"].items()}
    scores = {c: score(v, delta, 200, c) for c, v in cands.items()}
    for f, r in R.items():
        assert scores["known"][f].value == pytest.approx(r / k * frac, rel=1e-4)
    assert scores["known"][COMBINED].value == pytest.approx(sum(r / k * frac for r in R.values()) / len(R), rel=1e-4)
    order = sorted(scores, key=lambda c: -scores[c][COMBINED].value)
    assert order[0] == "known"
    assert scores["known"][COMBINED].z > 10
    assert scores["known"][COMBINED].of_ceiling == pytest.approx(frac, rel=1e-4)


def test_ceiling_bounds_every_basis_and_the_delta_aligned_basis_reaches_it():
    # kills: a ceiling computed from the basis' own captured share, or not matched to the basis' ranks
    B, delta = planted(4, 0.3, seed=3)
    ceil = ceiling_basis(delta, [], 4)
    assert torch.allclose(
        ceil[names()[0]][0].double(), delta[names()[0]].double() / delta[names()[0]].norm(), atol=1e-5
    ) or torch.allclose(-ceil[names()[0]][0].double(), delta[names()[0]].double() / delta[names()[0]].norm(), atol=1e-5)
    s = score(ceil, delta, 100, "ceiling")
    for f in [*R, COMBINED]:
        assert s[f].of_ceiling == pytest.approx(1.0, abs=1e-5)
    ranks_vary = {n: b[: 1 + i % 4] for i, (n, b) in enumerate(B.items())}  # ranks 1..4 per module
    for v in (B, ranks_vary, {n: orthonormal(8, b.shape[1], 5) for n, b in B.items()}, ceil):
        for sc in score(v, delta, 100).values():
            assert sc.value <= sc.ceiling * (1 + 1e-6)
    # several samples (R_act): the per-sample ceiling still bounds
    X = {n: torch.randn(5, d.shape[0], generator=torch.Generator().manual_seed(1)) for n, d in delta.items()}
    for sc in score(B, X, 100).values():
        assert sc.value <= sc.ceiling * (1 + 1e-6)


def test_random_basis_scores_about_one_with_small_z():
    # kills: a null drawn with another rank than the basis, a chance term of k/r per family summed not averaged
    _, delta = planted(4, 0.6, seed=11, spread=False)
    zs = []
    for rep in range(6):
        v = {n: orthonormal(4, d.shape[0], 1000 * rep + i) for i, (n, d) in enumerate(delta.items())}
        s = score(v, delta, 200)[COMBINED]
        assert abs(s.null_mean - 1) < 0.1 and s.null_std < 0.4
        zs.append(s.z)
    assert max(abs(z) for z in zs) < 3.5 and abs(sum(zs) / len(zs)) < 1.5


def test_null_matches_theory_and_its_error_shrinks_with_more_draws():
    # One vector, k of r: the captured share of a random k-subspace is Beta(k/2, (r-k)/2), so R_w has mean 1 and
    # std sqrt(2 (r-k) / (k (r+2))). kills: a null of non-orthonormal (Gaussian) rows, a null of a single draw
    k, r = 3, 12
    x = {"m.q_proj": torch.randn(r, generator=torch.Generator().manual_seed(0))}
    v = {"m.q_proj": orthonormal(k, r, 1)}
    big = score(v, x, 4000)[COMBINED]
    assert big.null_std == pytest.approx(math.sqrt(2 * (r - k) / (k * (r + 2))), rel=0.06)  # Gaussian rows: +25%
    err = {}
    for n in (100, 1600):
        devs = []
        for rep in range(12):  # a different vector each time: the null bases are fixed per (module, k)
            xr = {"m.q_proj": torch.randn(r, generator=torch.Generator().manual_seed(50 + rep))}
            devs.append(score(v, xr, n)[COMBINED].null_mean - 1.0)
        err[n] = math.sqrt(sum(d * d for d in devs) / len(devs))
        assert score(v, x, n)[COMBINED].null_sem == pytest.approx(score(v, x, n)[COMBINED].null_std / math.sqrt(n))
    assert err[1600] < err[100] / 2.0  # ~1/sqrt(16) = 1/4 expected
    assert torch.equal(random_bases.__wrapped__("m.q_proj", k, r, 10), random_bases.__wrapped__("m.q_proj", k, r, 10))
    assert not torch.equal(random_bases("m.q_proj", k, r, 10), random_bases("m.k_proj", k, r, 10))  # seeded per module


def test_families_are_weighted_equally():
    # A huge family fully missed and a tiny family fully captured: combined = the mean of the two family scores.
    # kills: scoring the concatenation of all modules (the big family would dominate)
    r, k = 16, 2
    big, small = "l.0.down_proj", "l.0.q_proj"
    Q_big = orthonormal(r, r, 1)
    V = {big: Q_big[:k], small: orthonormal(k, r, 2)}
    delta = {big: 1e3 * Q_big[k:].sum(0), small: V[small][0] * 1e-3}
    s = score(V, delta, 100)
    assert s["down_proj"].value == pytest.approx(0.0, abs=1e-6)
    assert s["q_proj"].value == pytest.approx(r / k, rel=1e-5)
    assert s[COMBINED].value == pytest.approx(r / k / 2, rel=1e-5)


def test_r_act_is_the_mean_over_samples_of_the_per_sample_ratio():
    # A basis holding sample 0's direction and orthogonal to sample 1: (r/k + 0) / 2 whatever their norms.
    # kills: pooling the squared norms over samples (the big sample would decide)
    r, k = 16, 2
    Q = orthonormal(r, r, 3)
    X = {"l.0.q_proj": torch.stack([1e-3 * Q[0], 1e3 * Q[5]])}  # [2, r]
    assert score({"l.0.q_proj": Q[:k]}, X, 100)[COMBINED].value == pytest.approx(r / k / 2, rel=1e-5)


def test_toward_share_reads_the_sign_of_v_delta():
    # Δ = −a V_0 + b V_1 (a² = 3 b²): 3/4 of the captured mass has V Δ < 0 (hack-ward for a v_hack-oriented V).
    # kills: a flipped sign (1/4), an unsquared share
    from projected_grpo.hypotheses.score import toward_share

    V = orthonormal(3, 10, 0)
    d = -math.sqrt(3) * V[0] + V[1]
    assert toward_share({"l.q_proj": V}, {"l.q_proj": d}) == pytest.approx(0.75, rel=1e-5)
    assert math.isnan(toward_share({"l.q_proj": V}, {"l.q_proj": torch.zeros(10)}))


def test_bad_inputs_fail_loud():
    _, delta = planted()
    n0 = names()[0]
    with pytest.raises(ScoreError, match="not orthonormal"):
        score({n0: torch.ones(2, delta[n0].shape[0])}, delta, 100, "bad")
    with pytest.raises(ScoreError, match="n_null"):
        score({n0: orthonormal(2, delta[n0].shape[0], 0)}, delta, 1)
    with pytest.raises(ScoreError, match="lack"):
        score({"elsewhere.q_proj": orthonormal(2, 8, 0)}, delta, 100)


def test_route2_quarantine_target_is_its_knob_space_part():
    # B_q A_q = U diag(s) Vh lies wholly in the knob space: its δS-diagonal part is s; a part orthogonal to it is 0.
    # kills: swapping U and Vh in _diag_part, subtracting the wrong snapshot
    from projected_grpo.adapter import adapter_modules, wrap_model
    from projected_grpo.hypotheses.analyze import Run, cumulative
    from projected_grpo.snapshots import Snapshot
    from tests.conftest import random_qwen3

    model = random_qwen3(0)
    wrap_model(model, ["o_proj"])
    mods = adapter_modules(model)
    n, m = next(iter(mods.items()))
    s = torch.randn(m.r, generator=torch.Generator().manual_seed(0))
    B, A = m.U.float() * s, m.Vh.float()  # B [d_out, r], A [r, d_in]: B A = U diag(s) Vh
    zero = {n: torch.zeros(m.r)}
    snap = lambda B_, A_, step, ds=zero: Snapshot(step, ds, zero, {n: A_}, {n: B_})
    run = Run(None, None, "route2", 0, [snap(torch.zeros_like(B), A, 0, {n: s}), snap(B, A, 5, {n: 3 * s})], [])
    assert torch.allclose(cumulative(run, "route2_quarantine", 1, mods)[n], s, atol=1e-4)
    assert torch.allclose(cumulative(run, "delta_s", 1, mods)[n], 2 * s)  # minus snapshot 0
    assert torch.allclose(cumulative(run, "delta_s_hack", 1, mods)[n], torch.zeros(m.r))
    outside = torch.randn(m.out_features, 1) @ torch.randn(1, m.in_features)
    outside = (
        outside - m.U.float() @ torch.diag(torch.diagonal(m.U.float().T @ outside @ m.Vh.float().T)) @ m.Vh.float()
    )
    run.snaps[1] = snap(outside, torch.eye(m.in_features), 5)
    run.snaps[0] = snap(torch.zeros_like(outside), torch.eye(m.in_features), 0)
    assert float(cumulative(run, "route2_quarantine", 1, mods)[n].abs().max()) < 1e-4


def test_early_basis_spans_the_first_quarter_deltas():
    from projected_grpo.hypotheses.bases import early_basis

    g = torch.Generator().manual_seed(0)
    d1, d2 = torch.randn(20, generator=g), torch.randn(20, generator=g)
    E = early_basis([{"a.q_proj": d1}, {"a.q_proj": d1 + d2}, {"a.q_proj": 2 * d1 + d2}], k=5)["a.q_proj"]
    assert E.shape == (2, 20)  # rank 2: dependent deltas add no direction
    for d in (d1, d2):
        assert float((E.double() @ d.double()).norm()) == pytest.approx(float(d.norm()), rel=1e-5)


@pytest.mark.slow
def test_cli_on_a_route_run(tmp_path):
    # End to end on the tiny model: snapshots -> every basis -> files; the ceiling bounds every row and reaches 1;
    # shuffled v_hack spans real's subspace so its R_w equals the run's v_hack; the one random draw is near chance.
    # kills: the loop not writing snapshots, a target missed (route's delta_s_hack), rows above their ceiling
    import subprocess
    import sys

    from projected_grpo.hypotheses.__main__ import main
    from projected_grpo.hypotheses.report import CSV_NAME, MD_NAME, SCATTER_NAME, TRAJ_NAME
    from tests.conftest import REPO

    run = tmp_path / "run"
    fast = ["trainer.max_new_tokens=12", "trainer.group=4", "trainer.prompts_per_step=2", "trainer.eval_prompts_per_mode=1",
            "trainer.eval_every=0", "vhack.n_pairs=12", "vhack.modes=[run_tests,sentinel]", "trainer.steps=4",
            "trainer.snapshot_every=1", "projection=route"]  # fmt: skip
    subprocess.run([sys.executable, "train.py", f"hydra.run.dir={run}", *fast], cwd=REPO, check=True,
                   capture_output=True)  # fmt: skip
    assert main([str(run), "--n-null", "100", "--out", str(tmp_path / "out")]) == 0
    for name in (CSV_NAME, MD_NAME, SCATTER_NAME, TRAJ_NAME):
        assert (tmp_path / "out" / name).stat().st_size > 0
    with open(tmp_path / "out" / CSV_NAME) as f:
        rows = list(csv.DictReader(f))
    assert {r["target"] for r in rows} == {"delta_s", "delta_s_hack"}
    assert all(float(r["R_w_over_ceiling"]) <= 1 + 1e-6 for r in rows)
    comb = {(r["target"], r["basis"]): r for r in rows if r["family"] == "combined"}
    assert float(comb[("delta_s", "ceiling")]["R_w_over_ceiling"]) == pytest.approx(1.0, abs=1e-5)
    for t in ("delta_s", "delta_s_hack"):
        assert float(comb[(t, "v_hack shuffled")]["R_w"]) == pytest.approx(
            float(comb[(t, "v_hack (as used)")]["R_w"]), rel=1e-5
        )
    assert abs(float(comb[("delta_s", "random (one draw)")]["z_w"])) < 4
    assert {"V mode=run_tests", "V mode=sentinel", "solve", "route2 v_grad", "early (first quarter)"} <= {
        b for _, b in comb
    }
