"""Knob snapshots: exact round trip (knobs and route2's quarantine), the loop's schedule, loud failures."""

import pytest
import torch

from projected_grpo import snapshots
from projected_grpo.adapter import adapter_modules, wrap_model
from projected_grpo.route2 import attach
from tests.conftest import compose, random_qwen3


def wrapped(seed=0, quarantine=False):
    model = random_qwen3(seed)
    wrap_model(model, ["q_proj", "down_proj"])
    if quarantine:
        attach(model, rank=3, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in adapter_modules(model).values():
            m.delta_s.copy_(torch.randn(m.r, generator=g))
            m.delta_s_hack.copy_(torch.randn(m.r, generator=g))
            if m.quarantine is not None:
                m.quarantine.B_q.copy_(torch.randn(m.quarantine.B_q.shape, generator=g))
    return adapter_modules(model)


@pytest.mark.parametrize("quarantine", [False, True])
def test_round_trip_is_exact(tmp_path, quarantine):
    # kills: saving delta_s under delta_s_hack's key (or the reverse), dropping route2's A_q/B_q, a wrong step
    mods = wrapped(quarantine=quarantine)
    snapshots.save(tmp_path, 7, mods)
    s = snapshots.load(snapshots.snapshot_path(tmp_path, 7))
    assert s.step == 7 and set(s.delta_s) == set(mods)
    for n, m in mods.items():
        assert torch.equal(s.delta_s[n], m.delta_s.detach())
        assert torch.equal(s.delta_s_hack[n], m.delta_s_hack.detach())
        if quarantine:
            assert torch.equal(s.A_q[n], m.quarantine.A_q.detach())
            assert torch.equal(s.B_q[n], m.quarantine.B_q.detach())
    assert bool(s.A_q) == quarantine
    assert not list((tmp_path / snapshots.SNAPSHOT_DIR).glob("*.tmp"))  # atomic: no temp file left


def test_schedule_and_load_all(tmp_path):
    # kills: maybe_save ignoring `every` (or final), saving with every=0, load_all not sorting by step
    mods = wrapped()
    for step in range(6):
        snapshots.maybe_save(tmp_path / "off", step, 0, mods, final=step == 5)
    assert not (tmp_path / "off").exists()
    for step in (0, 1, 2, 3, 4, 5):
        snapshots.maybe_save(tmp_path, step, 2, mods, final=step == 5)
    assert [s.step for s in snapshots.load_all(tmp_path)] == [0, 2, 4, 5]


def test_missing_or_foreign_snapshots_fail_loud(tmp_path):
    with pytest.raises(snapshots.SnapshotError, match="snapshot_every"):
        snapshots.load_all(tmp_path)
    snapshots.save(tmp_path, 3, wrapped())
    with pytest.raises(snapshots.SnapshotError, match="expected step 0"):
        snapshots.load_all(tmp_path)
    from projected_grpo.integrity import save_safetensors

    save_safetensors(tmp_path / "foreign.safetensors", {"x": torch.zeros(2)}, {"schema": "other"})
    with pytest.raises(snapshots.SnapshotError, match="schema"):
        snapshots.load(tmp_path / "foreign.safetensors")


def test_train_loop_writes_snapshots(tmp_path):
    # kills: the loop hook dropped (no files), the final snapshot dropped, a snapshot taken before the step
    from projected_grpo.loop import Trainer
    from projected_grpo.setup import build_setup

    cfg = compose(["trainer.max_new_tokens=8", "trainer.group=4", "trainer.prompts_per_step=1",
                   "trainer.eval_prompts_per_mode=1", "trainer.eval_every=0", "vhack.n_pairs=12", "projection=route",
                   "trainer.steps=3", "trainer.snapshot_every=2", "trainer.ckpt_every=0"])  # fmt: skip
    s = build_setup(cfg, tmp_path)
    t = Trainer(cfg, s)
    try:
        t.train()
    finally:
        t.close()
    snaps = snapshots.load_all(tmp_path)
    assert [x.step for x in snaps] == [0, 2, 3]
    assert all(float(v.abs().sum()) == 0 for v in snaps[0].delta_s.values())  # the knobs start at zero
    for n, m in t.modules.items():
        assert torch.equal(snaps[-1].delta_s[n], m.delta_s.detach())
        assert torch.equal(snaps[-1].delta_s_hack[n], m.delta_s_hack.detach())
    assert any(not torch.equal(snaps[1].delta_s[n], snaps[2].delta_s[n]) for n in t.modules)  # step 3 moved them


def test_a_damaged_snapshot_is_refused_naming_the_file(tmp_path):
    # kills: snapshots written or read without the integrity checksum (a bit flip in a knob read back silently)
    from projected_grpo.integrity import IntegrityError
    from tests.test_integrity import flip_bit

    path = snapshots.save(tmp_path, 0, wrapped())
    flip_bit(path, 3)
    with pytest.raises(IntegrityError, match=rf"{path.name}.*trainer\.snapshot_every"):
        snapshots.load(path)
