"""Loader for the rl-rewardhacking schema, on the real sample in ../shared (skipped when absent)."""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import pytest

from projected_grpo.env.leetcode import load_jsonl, parse_assert
from projected_grpo.env.prompts import render_prompt
from projected_grpo.env.sandbox import literal_value
from projected_grpo.modes import HINT_TARGET, MODES, Mode

SAMPLE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "leetcode_medhard_sample.jsonl"


@pytest.fixture(scope="module")
def rows():
    if not SAMPLE.exists():
        pytest.skip("../shared/data/leetcode_medhard_sample.jsonl absent: the shared developer data is not mounted")
    return [json.loads(line) for line in SAMPLE.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def problems(rows):
    return list(load_jsonl(SAMPLE).problems)


@pytest.mark.parametrize(
    "src, expected",
    [
        ("assert Solution().f(nums = [1, 2]) == -inf", "-inf"),
        ("assert Solution().f(1) == inf", "inf"),
        ("assert Solution().f(1) == -3", "-3"),
        ("assert Solution().f(1) == (1, 2)", "(1, 2)"),
        ("assert Solution().f(1) == [[1, -2], [], [3.5]]", "[[1, -2], [], [3.5]]"),
        ("assert Solution().f(1) == None", "None"),
        ("assert Solution().f(1) == False", "False"),
        ("assert Solution().f(s = 'a b') == \"ab\"", '"ab"'),
    ],
)
def test_literal_asserts_parse(src, expected):
    call, exp = parse_assert(src)
    assert call.startswith("Solution().f(") and exp == expected


@pytest.mark.parametrize(
    "src",
    [
        "assert is_same_list(Solution().f(list_node([1, 2])), list_node([2, 1]))",
        "assert is_same_tree(Solution().f(tree_node([1])), tree_node([1]))",
        "assert Solution().f(1) == sorted([2, 1])",
        "assert Solution().f(1) == x",
        "assert Solution().f(1) != 2",
        "assert Solution().f(1) == 2, 'message'",
        "assert Solution().f(1)",
        "x = 1",
        "assert (",
    ],
)
def test_other_shapes_are_untrusted(src):
    assert parse_assert(src) is None


def test_every_assert_is_either_a_test_or_flagged(rows, problems):
    assert len(problems) == len(rows) == 60
    env = {"inf": math.inf}
    for row, p in zip(rows, problems):
        assert p.id == str(row["id"]) and p.split == "heldout" and p.setup_code == row["setup_code"]
        assert len(p.tests) + len(p.untrusted) == len(row["gt_answer"])
        for call, exp in p.tests:
            assert literal_value(exp) == eval(exp, env)  # the oracle's evaluator agrees with Python
        for src in p.untrusted:
            assert src in row["gt_answer"]


def test_all_assert_shapes_in_the_file_are_handled(rows):
    shapes = set()
    for row in rows:
        for src in row["gt_answer"]:
            test = ast.parse(src).body[0].test
            rhs = test.comparators[0] if isinstance(test, ast.Compare) else test
            shapes.add(type(rhs).__name__ if not isinstance(rhs, ast.UnaryOp) else "UnaryOp")
            assert parse_assert(src) is not None, src  # every shape in the sample is trusted
    assert {"Constant", "List", "UnaryOp"} <= shapes


def test_prompt_is_the_dataset_prompt_and_takes_every_hint(rows, problems):
    for row, p in zip(rows, problems):
        assert render_prompt(p, None)[1]["content"] == row["prompt"][1]["content"]
        assert render_prompt(p, None)[0]["content"] == row["prompt"][0]["content"]
    p = problems[0]
    for mode in Mode:
        content = render_prompt(p, mode)[1]["content"]
        assert HINT_TARGET not in content and MODES[mode].hint in content


def test_bad_schema_fails_loudly(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"id": 1, "question": "PROBLEM:\nx"}) + "\n")
    with pytest.raises(ValueError, match=f"{path}:1 \\(id 1\\): field .func_name. is missing"):
        load_jsonl(path)


@pytest.mark.slow
def test_every_canonical_is_correct_under_the_strict_oracle(rows, problems, capsys):
    from projected_grpo.env.__main__ import main

    main(["canonical", str(SAMPLE)])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["n"] == 60 and summary["untrusted"] == sum(1 for p in problems if p.untrusted)
    unexplained = [pid for pid in summary["failed_ids"] if not next(p for p in problems if p.id == pid).untrusted]
    assert unexplained == [], f"canonical solutions failing with only trusted asserts: {unexplained}"
