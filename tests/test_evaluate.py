"""The deployment eval's prompt sets (balanced per mode, held-out and train) and its Wilson intervals."""

import dataclasses
from collections import Counter

import pytest

from projected_grpo.env.problems import assign_modes, embedded_problems
from projected_grpo.evaluate import eval_sets, summarize, wilson
from projected_grpo.modes import MIXED_MODES, Mode


def problems():
    return assign_modes(embedded_problems(), MIXED_MODES)


def test_both_splits_balanced_per_mode():
    # kills: the old eval (first n problems of one split: 4 sentinel, 4 file_marker, 2 run_tests, 2 stdout_marker)
    # and an eval that falls back to train prompts for the held-out split
    sets, notes = eval_sets(problems(), MIXED_MODES, 3)
    assert set(sets) == {"heldout", "train"} and not notes
    for split, ps in sets.items():
        assert {p.split for p in ps} == {split}
        assert Counter(p.mode for p in ps) == {m: 3 for m in MIXED_MODES}


def test_missing_heldout_is_stated_not_replaced():
    train_only = [dataclasses.replace(p, split="train") for p in problems()]
    sets, notes = eval_sets(train_only, MIXED_MODES, 3)
    assert "heldout" not in sets and "missing" in notes["heldout"]
    assert {p.split for p in sets["train"]} == {"train"}


def test_fewer_than_asked_keeps_the_balance_and_says_so():
    sets, notes = eval_sets(problems(), MIXED_MODES, 5)  # the held-out split has 3 per mode
    assert Counter(p.mode for p in sets["heldout"]) == {m: 3 for m in MIXED_MODES}
    assert "only 3" in notes["heldout"] and len(sets["train"]) == 20


def test_wilson_interval():
    # kills: a Wald interval (collapses to [0, 0] at k = 0) and a swapped k/n
    assert wilson(0, 10) == pytest.approx([0.0, 0.2775], abs=1e-4)
    assert wilson(5, 10) == pytest.approx([0.2366, 0.7634], abs=1e-4)
    assert wilson(0, 0) is None


def test_summarize_counts_per_mode():
    s = summarize([(Mode.sentinel, True, False), (Mode.sentinel, False, True), (Mode.run_tests, False, False)])
    assert s["n"] == 3 and s["hack"]["k"] == 1 and s["modes"]["se"]["n"] == 2 and s["modes"]["rt"]["solve"]["k"] == 0
