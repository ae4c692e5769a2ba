"""v_hack extraction, file schema v3, loader checks, noise floor, controls and the load-or-extract cache."""

import logging
import os
import subprocess
import sys
import zlib

import pytest
import torch

from projected_grpo import vhack
from projected_grpo.adapter import adapter_modules, wrap_model
from projected_grpo.config import DEFAULT_TARGETS
from projected_grpo.env.completions import Pair
from projected_grpo.env.problems import embedded_problems
from projected_grpo.modes import Mode
from tests.conftest import REPO, compose, random_qwen3

VOCAB = 97
MODES3 = "[run_tests,sentinel,exit_code]"
# 3 problems x 3 modes = 9 pairs, 2 held out -> 7 extraction pairs
OVERRIDES = [f"vhack.modes={MODES3}", "vhack.n_heldout=2", "vhack.extract_top_k=5", "vhack.k=3"]


class WordTok:
    """A stub tokenizer: groups of `group` whitespace-separated words hashed into the random model's vocabulary
    (group > 1 keeps the long embedded prompts/completions short and the tests fast)."""

    pad_token_id, eos_token_id = 0, 1
    chat_template = "<role> content"  # it has one (tokens.render_chat calls apply_chat_template)

    def __init__(self, group=1):
        self.group = group

    def apply_chat_template(self, messages, add_generation_prompt=False, tokenize=False, **options):
        text = " ".join(f"<{m['role']}> {m['content']}" for m in messages)
        return text + (" <assistant>" if add_generation_prompt else "")

    def __call__(self, text, add_special_tokens=False):
        words = text.split()
        chunks = [" ".join(words[i : i + self.group]) for i in range(0, len(words), self.group)]
        return {"input_ids": [2 + zlib.crc32(w.encode()) % (VOCAB - 2) for w in chunks]}


def wrapped_model(seed=0, layers=1):
    model = random_qwen3(seed=seed, vocab=VOCAB, layers=layers)
    wrap_model(model, DEFAULT_TARGETS)
    return model


def short_pairs(n=8):
    """Short synthetic pairs (hack text shares a marker; clean ones vary)."""
    modes = list(Mode)
    return [
        Pair(
            [{"role": "user", "content": f"solve problem {i} quickly"}],
            f"def f(): return {i} ; print ( 'all tests passed' )",
            f"def f(): return {i} + {i % 3} # correct",
            modes[i % len(modes)],
            f"p{i}",
        )
        for i in range(n)
    ]


def problems3():
    return embedded_problems()[:3]


# ---------------------------------------------------------------------------------------------------
# Extraction


def test_majority_vote_orientation_beats_mean_sign():
    # 4 pairs weakly along +e0, one outlier strongly along -e0: the mean points -e0, the majority +e0
    D = torch.zeros(5, 6)
    D[:4, 0], D[4, 0] = 1.0, -10.0
    D[:, 1] = torch.tensor([0.1, -0.1, 0.05, -0.05, 0.0])
    V, S = vhack.hack_basis(D, top_k=2, tau_axis=0.0)
    assert V.shape == (2, 6) and S.shape == (2,)
    assert V[0, 0] > 0.99  # oriented by the majority, not by the sign of the mean
    assert S[0] >= S[1]


def test_extract_orientation_orthonormal_and_tau():
    model = wrapped_model()
    pairs = short_pairs(8)
    G = vhack.per_completion_grads(model, WordTok(), pairs)
    V, S = vhack.extract(model, WordTok(), pairs, top_k=5, tau_axis=0.0, grads=G)
    assert set(V) == set(adapter_modules(model))
    for name, v in V.items():
        assert v.shape == (5, adapter_modules(model)[name].r) and v.dtype == torch.float32
        assert torch.allclose(v @ v.T, torch.eye(5), atol=1e-5), name  # orthonormal rows
        assert torch.all(S[name][:-1] >= S[name][1:])
        P = (G[name][0::2] - G[name][1::2]) @ v.T  # [n_pairs, k]
        pos, neg = (P > 0).sum(0), (P < 0).sum(0)
        assert torch.all((pos > neg) | ((pos == neg) & (P.sum(0) >= 0))), (name, pos, neg)
    Vt, St = vhack.extract(model, WordTok(), pairs, top_k=5, tau_axis=0.5, grads=G)
    for name in V:
        zeroed = St[name] / St[name][0] < 0.5
        assert torch.all(Vt[name][zeroed] == 0) and torch.equal(Vt[name][~zeroed], V[name][~zeroed])
        assert torch.equal(St[name], S[name])  # S is kept for zeroed rows


def test_batched_grads_equal_loop_and_leave_no_grad():
    from tests.test_adapter import randomize_knobs

    model = wrapped_model(layers=2)
    randomize_knobs(model, scale=0.1)
    model.train()
    pairs = short_pairs(6)
    loop = vhack.per_completion_grads_loop(model, WordTok(), pairs)
    for mb in (None, 5):
        batched = vhack.per_completion_grads(model, WordTok(), pairs, micro_batch=mb)
        for name, g in loop.items():
            assert g.shape == (12, adapter_modules(model)[name].r)
            assert torch.allclose(batched[name], g, atol=1e-6, rtol=1e-4), (mb, name)
    assert model.training  # mode restored
    assert all(p.grad is None for p in model.parameters())


def test_non_finite_fails_naming_the_pair():
    model = wrapped_model()
    with torch.no_grad():
        next(iter(adapter_modules(model).values())).delta_s.fill_(float("nan"))
    with pytest.raises(vhack.VHackError, match=r"problem_id='p0', mode='run_tests'"):
        vhack.extract(model, WordTok(), short_pairs(3), top_k=2, tau_axis=0.0)


def test_k_max_limited_by_pairs():
    model = wrapped_model(layers=1)
    V, S = vhack.extract(model, WordTok(), short_pairs(3), top_k=12, tau_axis=0.0)
    assert all(v.shape[0] == 3 for v in V.values())
    with pytest.raises(vhack.VHackError, match=r"k_max=3.*vhack\.extract_top_k>=4"):
        vhack.select(V, S, k=4, drop_bottom_frac=0.0)


# ---------------------------------------------------------------------------------------------------
# File schema, select (slicing + global noise floor) on a hand-built file, loader checks

# k_max = 3 rows per module; S per module. Row 1 of module 2 is tau-zeroed (all-zero V row).
HAND_S = [[9, 8, 0.5], [7, 1, 0.1], [6, 5, 4], [0.5, 0.4, 0.3], [3, 2, 1], [0.2, 0.1, 0.05], [4, 3.5, 3]]


def hand_file(model, path, **meta_over):
    names = sorted(adapter_modules(model))
    assert len(names) == len(HAND_S)
    V, S = {}, {}
    for name, s in zip(names, HAND_S):
        r = adapter_modules(model)[name].r
        V[name] = torch.eye(3, r)  # [k_max, r]
        S[name] = torch.tensor(s)
    V[names[2]][1] = 0.0
    meta = {
        "model": "tiny|embedded",
        "dtype": "float32",
        "top_k": "3",
        "tau_axis": "0.5",
        "source": "real",
        "modes": "run_tests",
        "pairs_hash": "x",
        "n_pairs": "9",
        "seed": "0",
        "base_hash": vhack.base_hash(model),
    }
    meta.update(meta_over)
    vhack.save_v_hack(path, V, S, meta)
    return names


def test_select_slicing_and_global_floor_exact(tmp_path):
    model = wrapped_model(layers=1)
    names = hand_file(model, tmp_path / "v.safetensors")
    # k=2 keeps 13 nonzero axes: 0.1 0.2 0.4 0.5 1 2 3 3.5 4 6 7 8 9; quantile(0.3) at position 3.6 -> 0.5+0.6*0.5
    vh = vhack.load_v_hack(tmp_path / "v.safetensors", model, k=2, drop_bottom_frac=0.3)
    assert vh.threshold == pytest.approx(0.8, abs=1e-6)
    assert (vh.kept_axes, vh.total_axes) == (9, 13)
    assert vh.dropped_modules == [names[3], names[5]]
    assert vh.k_per_module == {names[0]: 2, names[1]: 2, names[2]: 1, names[4]: 2, names[6]: 2}
    assert torch.equal(vh.v[names[2]], torch.eye(1, vh.v[names[2]].shape[1]))  # zeroed row excluded
    assert all(v.dtype == torch.float32 for v in vh.v.values())
    assert vh.path == tmp_path / "v.safetensors" and not vh.extracted

    keep_all = vhack.load_v_hack(tmp_path / "v.safetensors", model, k=3, drop_bottom_frac=0.0)
    assert keep_all.threshold == pytest.approx(0.05) and keep_all.kept_axes == keep_all.total_axes == 20
    assert keep_all.dropped_modules == []
    with pytest.raises(vhack.VHackError, match=r"vhack\.k=4 .*k_max=3.*vhack\.extract_top_k>=4"):
        vhack.load_v_hack(tmp_path / "v.safetensors", model, k=4, drop_bottom_frac=0.0)


@pytest.mark.parametrize(
    "what, meta_over, expect, match",
    [
        ("schema", {"schema": "v1"}, None, r"schema found 'v1', expected 'v3_checksum'"),
        ("model", {}, {"model": "qwen3_4b|Qwen/Qwen3-4B"}, r"model found 'tiny\|embedded', expected 'qwen3_4b"),
        ("dtype", {"dtype": "bfloat16"}, None, r"dtype found 'bfloat16', expected 'float32'"),
        ("base", {"base_hash": "0" * 32}, None, r"base_hash \(base weights\) found '0000"),
    ],
)
def test_loader_mismatch_errors(tmp_path, what, meta_over, expect, match):
    model = wrapped_model(layers=1)
    hand_file(model, tmp_path / "v.safetensors")
    if what == "schema":  # save_v_hack always writes the current schema: rewrite the metadata
        meta, V, S = vhack.read_v_hack(tmp_path / "v.safetensors")
        from projected_grpo.integrity import CHECKSUM, save_safetensors

        meta.pop(CHECKSUM)
        save_safetensors(tmp_path / "v.safetensors", {**V, **{vhack.SV + n: s for n, s in S.items()}},
                         {**meta, **meta_over})  # fmt: skip
    else:
        hand_file(model, tmp_path / "v.safetensors", **meta_over)
    with pytest.raises(vhack.VHackError, match=match) as e:
        vhack.load_v_hack(tmp_path / "v.safetensors", model, k=2, drop_bottom_frac=0.0, expect=expect)
    assert "re-extract" in str(e.value)


def test_loader_rejects_other_model_and_module_set(tmp_path):
    model = wrapped_model(layers=1)
    hand_file(model, tmp_path / "v.safetensors")
    other = wrapped_model(seed=1, layers=1)  # same shapes, other weights
    with pytest.raises(vhack.VHackError, match=r"base_hash \(base weights\).*re-extract"):
        vhack.load_v_hack(tmp_path / "v.safetensors", other, k=2, drop_bottom_frac=0.0)
    partial = random_qwen3(vocab=VOCAB, layers=1)
    wrap_model(partial, ["q_proj", "k_proj", "v_proj", "o_proj"])  # fewer modules, same weights
    with pytest.raises(vhack.VHackError, match=r"module set.*re-extract"):
        vhack.load_v_hack(tmp_path / "v.safetensors", partial, k=2, drop_bottom_frac=0.0)


# ---------------------------------------------------------------------------------------------------
# get_v_hack: cache, explicit path, controls


def get(model, cache_dir, *over):
    cfg = compose(OVERRIDES + list(over))
    return vhack.get_v_hack(cfg, model, WordTok(3), problems3(), cache_dir)


def test_cache_miss_then_hit(cache_dir, caplog):
    model = wrapped_model()
    with caplog.at_level(logging.INFO, logger="projected_grpo.vhack"):
        first = get(model, cache_dir)
        second = get(model, cache_dir)
    assert first.extracted and not second.extracted and first.path == second.path
    assert first.path.parent == cache_dir / "vhack" and first.path.exists()
    assert "v_hack: extracted real from 7 pairs" in caplog.text
    assert f"v_hack: loaded cached extraction {second.path}" in caplog.text
    assert all(torch.equal(first.v[n], second.v[n]) for n in first.v)
    meta = second.meta
    assert (meta["schema"], meta["model"], meta["source"], meta["modes"]) == (
        vhack.SCHEMA, "tiny|embedded", "real", "run_tests,sentinel,exit_code")  # fmt: skip
    assert meta["base_hash"] == vhack.base_hash(model) and meta["k_max"] == "5"
    # a different k / floor reuses the same file; a different top_k is a different file
    assert get(model, cache_dir, "vhack.k=2").path == first.path
    assert get(model, cache_dir, "vhack.extract_top_k=4", "vhack.k=2").path != first.path


def test_explicit_path_missing_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"python -m projected_grpo.vhack extract"):
        get(wrapped_model(layers=1), tmp_path, f"vhack.path={tmp_path / 'nope.safetensors'}")
    assert not (tmp_path / "nope.safetensors").exists()


def test_explicit_path_loads_and_checks_source(cache_dir):
    model = wrapped_model(layers=1)
    real = get(model, cache_dir)
    again = get(model, cache_dir, f"vhack.path={real.path}")
    assert not again.extracted and all(torch.equal(real.v[n], again.v[n]) for n in real.v)
    with pytest.raises(vhack.VHackError, match=r"source found 'real', expected 'shuffled'"):
        get(model, cache_dir, f"vhack.path={real.path}", "vhack.source=shuffled")


def test_controls(cache_dir):
    model = wrapped_model(layers=1)
    real = get(model, cache_dir, "vhack.drop_bottom_frac=0.3")
    rand = get(model, cache_dir, "vhack.drop_bottom_frac=0.3", "vhack.source=random")
    assert not rand.extracted and rand.path == real.path  # derived from the real file at load time
    assert rand.source == "random" and rand.k_per_module == real.k_per_module
    for n, v in rand.v.items():
        assert torch.allclose(v @ v.T, torch.eye(v.shape[0]), atol=1e-5)
        assert not torch.allclose(v.abs(), real.v[n].abs(), atol=1e-2)
    shuffled = get(model, cache_dir, "vhack.source=shuffled")
    nonhack = get(model, cache_dir, "vhack.source=nonhack")
    assert shuffled.extracted and nonhack.extracted
    assert len({real.path, shuffled.path, nonhack.path}) == 3
    assert len({real.meta["pairs_hash"], shuffled.meta["pairs_hash"], nonhack.meta["pairs_hash"]}) == 3
    real_all = get(model, cache_dir)
    flipped = 0
    for n, v in real_all.v.items():
        # nonhack: another top axis (|cos| well below 1)
        assert abs(float(nonhack.v[n][0] @ v[0])) < 0.99
        # shuffled: swapping hack/clean negates rows of D, so the right singular vectors (the subspace) are
        # the SAME as real's; only the majority-vote orientation of each axis changes
        cos = (shuffled.v[n] @ v.T).diagonal()  # [k]
        assert torch.allclose(cos.abs(), torch.ones_like(cos), atol=1e-3)
        flipped += int((cos < 0).sum())
    assert flipped > 0


def test_make_pairs_heldout_and_shuffle():
    cfg = compose(OVERRIDES)
    train, held = vhack.make_pairs(cfg.vhack, problems3())
    assert (len(train), len(held)) == (7, 2)
    assert [p.problem_id for p in held] == [problems3()[-1].id] * 2
    shuf, held_s = vhack.make_pairs(cfg.vhack, problems3(), "shuffled")
    assert held_s == held
    swapped = [a.hack_completion != b.hack_completion for a, b in zip(train, shuf)]
    assert sum(swapped) == 3
    nh, _ = vhack.make_pairs(cfg.vhack, problems3(), "nonhack")
    assert len(nh) == 7 and vhack.pairs_hash(nh) != vhack.pairs_hash(train)


def test_heldout_report_is_finite():
    model = wrapped_model(layers=1)
    pairs = short_pairs(8)
    V, S = vhack.extract(model, WordTok(), pairs[:6], top_k=3, tau_axis=0.0)
    vh = vhack.select(V, S, k=2, drop_bottom_frac=0.0)
    rep = vhack.heldout_report(vh, vhack.per_completion_grads(model, WordTok(), pairs[6:]))
    assert rep["n_heldout"] == 2
    assert 0 <= rep["cin"] <= 1 and 0 < rep["cin_null_relu"] < rep["cin_null_norelu"] <= 1
    assert 0 <= rep["cin_random_empirical"] <= 1


# ---------------------------------------------------------------------------------------------------
# Two processes extracting the same missing file

CHILD = """
import logging, pathlib, sys, time
logging.basicConfig(level=logging.INFO, format="%(message)s")
from tests.test_vhack import get, wrapped_model
cache, me = pathlib.Path(sys.argv[1]), sys.argv[2]
model = wrapped_model()
(cache.parent / f"ready_{me}").touch()  # barrier: both processes start get_v_hack together
t0 = time.time()
while len(list(cache.parent.glob("ready_*"))) < 2 and time.time() - t0 < 60:
    time.sleep(0.02)
vh = get(model, cache)
print("RESULT", vh.extracted, vh.path)
"""


@pytest.mark.slow
def test_concurrent_extraction_one_valid_file(cache_dir):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(cache_dir), str(i)],
            cwd=REPO,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    text = "\n".join(outs)
    assert text.count("v_hack: extracted") == 1 and text.count("v_hack: loaded cached extraction") == 1, text
    files = sorted((cache_dir / "vhack").glob("*.safetensors"))
    assert len(files) == 1 and not list((cache_dir / "vhack").glob("*.tmp"))
    vh = vhack.load_v_hack(files[0], wrapped_model(), k=4, drop_bottom_frac=0.25)
    assert vh.kept_axes > 0


def test_cli_usage():
    from projected_grpo.vhack.__main__ import main

    assert main([]) == 2 and main(["inspect"]) == 2


# ---------------------------------------------------------------------------------------------------
# Orientation end to end (issue #18): V from a real extraction, checked with an NLL computed here, not by the
# code under test


def own_nll(model, tok, pairs) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (hack [n], clean [n]) mean completion-token NLL per pair, from the logits directly."""
    from projected_grpo.tokens import pack

    prompts, comps, _ = vhack.examples(tok, pairs)
    ids, attn, cmask = pack(prompts, comps, tok.pad_token_id)
    pos = (attn.cumsum(1) - 1).clamp(min=0)
    logits = model(input_ids=ids, attention_mask=attn, position_ids=pos).logits[:, :-1].float()  # [B, T-1, V]
    lp = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None]).squeeze(-1)  # [B, T-1]: token t+1
    m = cmask[:, 1:].float()
    nll = -(lp * m).sum(1) / m.sum(1)
    return nll[0::2], nll[1::2]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_orientation_end_to_end_hackward_step_and_erase(seed):
    # kills: a flipped V (e.g. tokens.completion_nll returning -NLL, or majority_sign negated): the hack NLL's
    # gradient then has c < 0 on the top axis, and erase removes the wrong half so the hack-clean gap shrinks
    from projected_grpo.config import Gate
    from projected_grpo.projection import project

    model, tok, pairs = wrapped_model(seed=seed, layers=1), WordTok(), short_pairs(8)
    V, S = vhack.extract(model, tok, pairs, top_k=5, tau_axis=0.0)
    mods = adapter_modules(model)
    hack, clean = own_nll(model, tok, pairs)
    gap0 = float((hack - clean).mean().detach())
    g = dict(zip(mods, torch.autograd.grad(hack.mean(), [m.delta_s for m in mods.values()])))  # [r] each
    top = torch.stack([(V[n] @ g[n])[0] for n in V])  # c on each module's top axis
    assert float((top > 0).float().mean()) >= 0.9, top  # descending g moves hack-ward along V
    assert sum(float(S[n] @ (V[n] @ g[n])) for n in V) > 0  # and so does the S-weighted total over all axes
    scale = 0.5 / float(torch.cat(list(g.values())).norm())
    change = {}
    for kind in ("none", "erase"):
        with torch.no_grad():
            for n, m in mods.items():
                step = project(g[n], V[n], Gate.one_sided)[0] if kind == "erase" and n in V else g[n]
                m.delta_s.copy_(-scale * step)
            h, c = own_nll(model, tok, pairs)
            change[kind] = float((h - c).mean()) - gap0
            for m in mods.values():
                m.delta_s.zero_()
    assert change["none"] < -0.01  # an unprojected step on the hack NLL makes the hack relatively likelier
    assert abs(change["erase"]) < 0.1 * abs(change["none"]), change  # one-sided erase holds the gap
