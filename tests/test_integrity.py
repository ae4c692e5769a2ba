"""Integrity of every file the project reads back (issue 16, findings 1, 3 and 4): a content checksum verified at
load, non-finite values refused, errors that name the file, the config key and the module/field; checkpoints
that hold only data (a malicious pickle never runs).

Each test names in a comment the mutant it kills (checked by breaking the code on purpose)."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from projected_grpo import checkpoint, vhack
from projected_grpo.adapter import SVD_DIR, svd_cached, weight_key
from projected_grpo.integrity import CHECKSUM, IntegrityError, load_safetensors, save_safetensors, tensors_checksum
from tests.conftest import compose
from tests.test_resume_safety import Payload
from tests.test_vhack import hand_file, wrapped_model


def flip_bit(path, offset_from_end: int, bit: int = 0) -> None:
    """Flip one bit of a byte near the end of the file (the tensor data: a finite value stays finite)."""
    b = bytearray(path.read_bytes())
    b[-offset_from_end] ^= 1 << bit
    path.write_bytes(bytes(b))


# ---------------------------------------------------------------------------------------------------
# The helper


def test_checksum_covers_names_values_and_metadata():
    # kills: a checksum over the tensor bytes only (names/metadata unchecked), or one that skips some tensors
    t = {"a": torch.arange(4.0), "b": torch.ones(2, 2)}
    base = tensors_checksum(t, {"m": "1"})
    assert base == tensors_checksum({"b": t["b"].clone(), "a": t["a"].clone()}, {"m": "1", CHECKSUM: "x"})
    assert base != tensors_checksum({"a": t["a"], "c": t["b"]}, {"m": "1"})  # renamed
    assert base != tensors_checksum({"a": t["a"], "b": t["b"] + 1e-7}, {"m": "1"})  # one value
    assert base != tensors_checksum(t, {"m": "2"})  # metadata
    assert base != tensors_checksum({"a": t["a"], "b": t["b"].reshape(4)}, {"m": "1"})  # shape


def test_save_load_roundtrip_and_every_refusal(tmp_path):
    # kills: load without verify (bit flip read back), without check_finite (NaN read back), a safe_open error
    # passed through unwrapped (message without file/key)
    p = tmp_path / "x.safetensors"
    save_safetensors(p, {"w": torch.linspace(0, 1, 64)}, {"m": "1"})
    meta, t = load_safetensors(p, "some.key", "FIX")
    assert meta["m"] == "1" and torch.equal(t["w"], torch.linspace(0, 1, 64))
    flip_bit(p, 9)
    with pytest.raises(IntegrityError, match=rf"{p} \(chosen by some\.key\) does not match its content checksum.*FIX"):
        load_safetensors(p, "some.key", "FIX")
    save_safetensors(p, {"w": torch.tensor([1.0, float("nan")])}, {})
    with pytest.raises(IntegrityError, match=r"1 non-finite value\(s\) in w .*FIX"):
        load_safetensors(p, "some.key", "FIX")
    p.write_bytes(b"\x00" * 3)
    with pytest.raises(IntegrityError, match=rf"{p} \(chosen by some\.key\) is not a readable safetensors file"):
        load_safetensors(p, "some.key", "FIX")


def test_loaded_tensors_sit_in_aligned_memory(tmp_path):
    # a resumed run must compute bit-identically to an uninterrupted one; MKL's gemv rounds differently on the
    # 8-byte-aligned buffers safetensors hands out (test_loop's kill-resume test drifted at 1e-8).
    # kills: load_safetensors without the .clone()
    p = tmp_path / "x.safetensors"
    save_safetensors(p, {f"t{i}": torch.randn(3, 5) for i in range(4)}, {"pad": "x" * 13})
    _, t = load_safetensors(p, "some.key", "FIX")
    assert all(v.data_ptr() % 64 == 0 for v in t.values())


# ---------------------------------------------------------------------------------------------------
# v_hack files (findings 3 and 4)


def test_vhack_truncated_or_garbage_names_file_and_key(tmp_path):
    # finding 3 (main: `SafetensorError: incomplete metadata` / `header too large`, no path, no key)
    # kills: read_v_hack back on raw safe_open
    model = wrapped_model(layers=1)
    path = tmp_path / "v.safetensors"
    hand_file(model, path)
    data = path.read_bytes()
    for bad in (data[: len(data) // 2], data[:5], b"\xff" * 64):
        path.write_bytes(bad)
        with pytest.raises(IntegrityError) as e:
            vhack.load_v_hack(path, model, k=2, drop_bottom_frac=0.0)
        msg = str(e.value)
        assert str(path) in msg and "vhack.path" in msg and "python -m projected_grpo.vhack extract" in msg, msg


def test_vhack_nan_rows_are_refused_not_dropped(tmp_path):
    # finding 4 (main: the noise floor silently drops the NaN module, one INFO line)
    # kills: check_finite dropped from load_safetensors
    model = wrapped_model(layers=1)
    path = tmp_path / "v.safetensors"
    names = hand_file(model, path)
    meta, V, S = vhack.read_v_hack(path)
    V[names[1]][0] = float("nan")
    S[names[1]][0] = float("nan")
    meta.pop(CHECKSUM)
    vhack.save_v_hack(path, V, S, meta)  # a consistent checksum: only the finiteness check can catch it
    with pytest.raises(IntegrityError, match=rf"non-finite value\(s\) in (_sv/)?{names[1]} "):
        vhack.load_v_hack(path, model, k=2, drop_bottom_frac=0.3)


def test_vhack_finite_bit_flip_is_detected(tmp_path):
    # finding 4 (main: a finite bit flip in V is read as data)
    # kills: verify() dropped from load_safetensors, or the checksum not written by save_v_hack
    model = wrapped_model(layers=1)
    path = tmp_path / "v.safetensors"
    hand_file(model, path)
    flip_bit(path, 3)  # a low mantissa bit of the last float32 of the data
    with pytest.raises(IntegrityError, match=r"does not match its content checksum.*Re-extract it"):
        vhack.load_v_hack(path, model, k=2, drop_bottom_frac=0.0)


def test_vhack_cache_file_error_says_delete(tmp_path):
    # kills: get_v_hack passing vhack.path's key/fix for the automatic cache (the user would be told to
    # re-extract into a path they never set)
    cfg = compose(["vhack.n_pairs=6", "vhack.n_heldout=1", "vhack.k=2", f"paths.cache_dir={tmp_path}"])
    from projected_grpo.setup import build_setup

    s = build_setup(cfg, tmp_path / "run", with_v_hack=False)
    vh = vhack.get_v_hack(cfg, s.model, s.tokenizer, s.problems, tmp_path)
    flip_bit(vh.path, 2)
    with pytest.raises(IntegrityError) as e:
        vhack.get_v_hack(cfg, s.model, s.tokenizer, s.problems, tmp_path)
    assert f"{vh.path} (chosen by {vhack.CACHE_KEY})" in str(e.value) and f"rm {vh.path}" in str(e.value)


# ---------------------------------------------------------------------------------------------------
# SVD cache and teacher pool


def test_svd_cache_bit_flip_and_nan_are_refused(tmp_path):
    # kills: svd_cached reading with load_file (no checksum, no finiteness)
    w = torch.randn(12, 8)
    svd_cached(w, tmp_path)
    path = tmp_path / SVD_DIR / f"{weight_key(w)}.safetensors"
    flip_bit(path, 5)
    with pytest.raises(IntegrityError, match=rf"{path} \(chosen by paths\.cache_dir \(the SVD cache\)\).*rm {path}"):
        svd_cached(w, tmp_path)
    meta, t = {"weight_key": weight_key(w), "shape": "(12, 8)"}, {"U": torch.zeros(12, 8), "S": torch.zeros(8)}
    save_safetensors(path, {**t, "Vh": torch.full((8, 8), float("inf"))}, meta)
    with pytest.raises(IntegrityError, match=r"non-finite value\(s\) in Vh"):
        svd_cached(w, tmp_path)


def test_teacher_pool_edit_and_nan_are_refused(tmp_path):
    # kills: teacher_pool._load back on json.loads (no checksum), or load_json without finite_json
    from projected_grpo.config import TeacherConfig
    from projected_grpo.env.problems import assign_modes, embedded_problems
    from projected_grpo.integrity import with_checksum
    from projected_grpo.modes import MIXED_MODES
    from projected_grpo.teacher_pool import build_pool

    class Fixed:  # a grader stand-in: every completion gets reward 1, nothing exploited
        def grade_batch(self, items):
            from types import SimpleNamespace

            return [SimpleNamespace(reward=1.0, passed=True, gt_correct=True, exploited=False) for _ in items]

    problems = assign_modes(embedded_problems(), MIXED_MODES)[:2]
    cfg = TeacherConfig(n_per_problem=2)
    pool = build_pool(problems, cfg, Fixed(), tmp_path)
    data = json.loads(pool.path.read_text())
    pid = next(iter(data["problems"]))
    data["problems"][pid][0]["reward"] = 0.0  # an edit that keeps the file valid JSON
    pool.path.write_text(json.dumps(data))
    with pytest.raises(IntegrityError, match=rf"{pool.path} \(chosen by paths\.cache_dir .*content checksum.*rm "):
        build_pool(problems, cfg, Fixed(), tmp_path)
    data["problems"][pid][0]["reward"] = float("nan")
    data.pop(CHECKSUM)
    pool.path.write_text(json.dumps(with_checksum(data)))
    with pytest.raises(IntegrityError, match=rf"non-finite value nan in field problems/{pid}\[0\]/reward"):
        build_pool(problems, cfg, Fixed(), tmp_path)


# ---------------------------------------------------------------------------------------------------
# Checkpoints (findings 1 and 3)


def test_checkpoint_state_roundtrip(tmp_path):
    # kills: flatten turning tuples into lists (AdamW betas, Python RNG state) or dropping int dict keys
    import random

    rng = random.Random(3)
    state = {"step": 4, "rng_py": rng.getstate(), "opt": {"state": {0: {"exp_avg": torch.ones(3)}},
             "param_groups": [{"betas": (0.9, 0.99), "params": [0]}]}, "none": None, "evals": [{"k": 0.5}]}  # fmt: skip
    checkpoint.save(tmp_path / "c.safetensors", state)
    back = checkpoint.load(tmp_path / "c.safetensors")
    assert back["rng_py"] == rng.getstate() and isinstance(back["opt"]["param_groups"][0]["betas"], tuple)
    assert torch.equal(back["opt"]["state"][0]["exp_avg"], torch.ones(3)) and back["evals"] == [{"k": 0.5}]
    assert back["step"] == 4 and back["none"] is None


def test_legacy_pickle_checkpoint_never_runs(tmp_path):
    # finding 1 (main: torch.load(weights_only=False) ran the payload before failing with KeyError: 'config')
    # kills: preflight or convert unpickling with weights_only=False
    marker = tmp_path / "marker"
    legacy = tmp_path / checkpoint.LEGACY_NAME
    legacy.write_bytes(pickle.dumps({"step": Payload(marker)}))
    cfg = compose([])
    with pytest.raises(checkpoint.CheckpointError, match=r"old pickle format.*projected_grpo\.checkpoint convert"):
        checkpoint.preflight(cfg, tmp_path)
    with pytest.raises(checkpoint.CheckpointError, match=r"cannot be read as data only"):
        checkpoint.convert(legacy)
    assert not marker.exists()
    assert not (tmp_path / checkpoint.CKPT_NAME).exists()


def test_legacy_checkpoint_of_plain_data_converts(tmp_path):
    # kills: convert not writing the safetensors file, or writing one that preflight refuses
    cfg = compose([])
    state = {"step": 2, "knobs": {"m": (torch.ones(2), torch.zeros(2))}, "config": checkpoint.config_fingerprint(cfg)}
    torch.save(state, tmp_path / checkpoint.LEGACY_NAME)
    assert checkpoint.main(["convert", str(tmp_path / checkpoint.LEGACY_NAME)]) == 0
    back = checkpoint.preflight(cfg, tmp_path)
    assert back["step"] == 2 and torch.equal(back["knobs"]["m"][0], torch.ones(2))


@pytest.mark.parametrize("damage", ["truncated", "random_bytes", "bit_flip", "nan_knob"])
def test_damaged_checkpoint_is_refused_with_path_and_fix(tmp_path, damage):
    # finding 3 (main: `PytorchStreamReader failed` / `invalid load key` / `UnpicklingError`, no path)
    # kills: checkpoint.load without the IntegrityError -> CheckpointError wrapping, or without verify/check_finite
    cfg = compose([])
    path = tmp_path / checkpoint.CKPT_NAME
    knob = torch.linspace(-1, 1, 32)
    if damage == "nan_knob":
        knob[3] = float("nan")
    checkpoint.save(
        path, {"step": 1, "knobs": {"mod.q_proj": (knob, knob)}, "config": checkpoint.config_fingerprint(cfg)}
    )
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) - 40])
    elif damage == "random_bytes":
        path.write_bytes(torch.randint(0, 256, (len(data),), generator=torch.Generator().manual_seed(0),
                                       dtype=torch.uint8).numpy().tobytes())  # fmt: skip
    elif damage == "bit_flip":
        flip_bit(path, 7)
    with pytest.raises(checkpoint.CheckpointError) as e:
        checkpoint.preflight(cfg, tmp_path)
    msg = str(e.value)
    assert str(path) in msg and "hydra.run.dir" in msg and "fresh run directory" in msg, msg
    if damage == "nan_knob":
        assert "knobs/mod.q_proj/" in msg


def test_the_adapter_training_path_is_not_part_of_the_resume_fingerprint():
    # trainer.folded_forward changes float rounding only (tests/test_folded_forward.py), so a run checkpointed before
    # the option existed (or on the other path) resumes; any other trainer field still changes the fingerprint.
    # kills: the pop of folded_forward dropped (resuming a pre-folded-forward checkpoint refused); the same for
    # trainer.shared_prompt_backward (tests/test_shared_prompt.py)
    fp = checkpoint.config_fingerprint
    assert fp(compose(["trainer.folded_forward=false"])) == fp(compose(["trainer.folded_forward=true"]))
    assert fp(compose(["trainer.shared_prompt_backward=false"])) == fp(compose([]))
    assert fp(compose(["trainer.lr=0.5"])) != fp(compose([]))
