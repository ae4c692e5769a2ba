"""Behaviour lock: 3 smoke steps of two arms reproduce the committed rows (metrics without timing, deployment eval,
summary). A refactor must not move them; a change of numerics on purpose regenerates them (message below)."""

import json
import math
import os
from pathlib import Path

import pytest

from tests.golden import ARMS, run_arm

GOLDEN = Path(__file__).with_name("golden_rows.json")
# float32 kernels reorder sums differently on another CPU (AVX2 vs AVX-512 paths): measured drift between two
# machines is ~3e-7 relative on cin/grad_norm and ~1e-8 absolute on quantities that are ~0 (cout). A real change
# of behaviour (a flipped sign, a dropped projection, a moved RNG draw) moves values by orders of magnitude more.
REL_TOL, ABS_TOL = 1e-5, 1e-6
REGENERATE = ("if the change of behaviour is ON PURPOSE, regenerate with\n"
              "  python -m tests.golden --steps 3 --arms erase_real route2_grad --write-rows tests/golden_rows.json\n"
              "and say why in the commit; otherwise the change moved the numerics (a refactor must not)")  # fmt: skip


def differences(want, got, path="") -> list[str]:
    """Where got differs from want: floats to REL_TOL relative or ABS_TOL absolute, the rest exactly (ints, bools,
    None, strings, keys, lengths)."""
    if isinstance(want, float) and isinstance(got, float):
        return [] if math.isclose(want, got, rel_tol=REL_TOL, abs_tol=ABS_TOL) else [f"{path}: {want!r} -> {got!r}"]
    if isinstance(want, dict) and isinstance(got, dict):
        if set(want) != set(got):
            return [f"{path}: keys {sorted(set(want) ^ set(got))} added or removed"]
        return [d for k in sorted(want) for d in differences(want[k], got[k], f"{path}/{k}")]
    if isinstance(want, list) and isinstance(got, list):
        if len(want) != len(got):
            return [f"{path}: length {len(want)} -> {len(got)}"]
        return [d for i, (w, g) in enumerate(zip(want, got)) for d in differences(w, g, f"{path}[{i}]")]
    return [] if want == got and type(want) is type(got) else [f"{path}: {want!r} -> {got!r}"]


def test_differences_sees_a_changed_number():
    # kills: a comparison that accepts anything
    assert differences({"a": [1.0, None]}, {"a": [1.0, None]}) == []
    assert differences({"a": [1.0]}, {"a": [-1.0]}) == ["/a[0]: 1.0 -> -1.0"]
    assert differences({"a": [0.3409]}, {"a": [0.3409 * (1 + 3e-7)]}) == []  # another CPU's float32 rounding
    assert differences({"a": [0.3409]}, {"a": [0.3409 * (1 + 1e-4)]})  # a real change
    assert differences({"a": 1}, {"a": 1.0}) and differences({"a": 1}, {"b": 1}) and differences([1], [1, 2])


@pytest.mark.parametrize("arm", ["erase_real", "route2_grad"])
def test_short_run_reproduces_the_committed_rows(tmp_path, arm):
    # kills: any change of numerics or RNG order in the train step (e.g. a flipped sign in the Dr.GRPO loss, the
    # teacher draw moved before the student sampling, a dropped projection), metrics renamed or dropped
    golden = json.loads(GOLDEN.read_text())
    got = run_arm(tmp_path / arm, golden["steps"], ARMS[arm], Path(os.environ["PROJECTED_GRPO_CACHE"]))
    diff = differences(golden["arms"][arm], json.loads(json.dumps(got)))
    assert not diff, f"{arm}: {len(diff)} values differ from {GOLDEN.name}:\n" + "\n".join(diff[:20]) + "\n" + REGENERATE
