"""The embedded set, its split, the mode partition, prompts and contrastive pairs."""

from __future__ import annotations

from collections import Counter

import pytest

from projected_grpo.config import EnvConfig
from projected_grpo.env.__main__ import grade_canonicals
from projected_grpo.env.completions import Pair, contrastive_pairs, honest
from projected_grpo.env.grader import Grader
from projected_grpo.env.leetcode import DataError
from projected_grpo.env.problems import assign_modes, embedded_problems, load_problems
from projected_grpo.env.prompts import SYSTEM_PROMPT, apply_hint, render_prompt
from projected_grpo.modes import ALL_MODES, HINT_TARGET, MIXED_MODES, MODES, Mode

HELDOUT = {
    "is_subsequence", "gcd_min_max", "add_digits", "pascal_row", "excel_column_number", "summary_ranges",
    "top_k_frequent", "number_of_islands", "jump_game", "word_break", "trapping_rain_water", "subarray_sum_k",
}  # fmt: skip


@pytest.fixture(scope="module")
def grader():
    with Grader(n_workers=2) as g:
        yield g


def test_embedded_set_shape():
    problems = embedded_problems()
    assert len(problems) >= 48
    assert len({p.id for p in problems}) == len(problems)
    for p in problems:
        assert p.signature.startswith(f"def {p.method}(self") and p.signature.endswith(":")
        assert p.canonical.startswith("class Solution:\n") and p.signature in p.canonical
        assert len(p.tests) >= 4, p.id
        assert all(call.startswith(f"Solution().{p.method}(") for call, _ in p.tests), p.id
        assert p.difficulty in ("easy", "medium", "hard") and p.mode is None and not p.untrusted
        assert 0 < len(p.description) < 200, p.id


def test_every_canonical_passes_its_tests_under_the_oracle(grader):
    summary = grade_canonicals(embedded_problems(), grader)
    assert summary["failed_ids"] == [] and summary["correct"] == summary["n"]


def test_split_is_fixed():
    problems = embedded_problems()
    assert {p.id for p in problems if p.split == "heldout"} == HELDOUT
    assert {p.split for p in problems} == {"train", "heldout"}
    assert sum(p.split == "train" for p in problems) >= 40


@pytest.mark.parametrize("modes", [MIXED_MODES, ALL_MODES, (Mode.sentinel, Mode.run_tests)])
def test_mode_partition_is_balanced_per_split_and_deterministic(modes):
    problems = embedded_problems()
    assigned = assign_modes(problems, modes)
    assert [p.id for p in assigned] == [p.id for p in problems]  # input order kept
    assert all(p.mode in modes for p in assigned)
    for split in ("train", "heldout"):
        counts = Counter(p.mode for p in assigned if p.split == split)
        assert set(counts) == set(modes)
        assert max(counts.values()) - min(counts.values()) <= 1, (split, counts)
    assert assign_modes(list(reversed(problems)), modes) == list(reversed(assigned))  # order-independent


def test_mixed_partition_is_exactly_balanced():
    assigned = assign_modes(embedded_problems(), MIXED_MODES)
    counts = Counter((p.split, p.mode) for p in assigned)
    assert len({v for k, v in counts.items() if k[0] == "train"}) == 1
    assert len({v for k, v in counts.items() if k[0] == "heldout"}) == 1


def test_assign_modes_rejects_bad_modes():
    with pytest.raises(ValueError, match="at least one mode"):
        assign_modes(embedded_problems(), [])
    with pytest.raises(ValueError, match="duplicate"):
        assign_modes(embedded_problems(), [Mode.sentinel, Mode.sentinel])
    with pytest.raises(ValueError, match="unknown loophole mode"):
        assign_modes(embedded_problems(), ["sentinal"])


def test_load_problems_embedded_and_hub_without_datasets():
    problems = load_problems(EnvConfig(source="embedded"), MIXED_MODES)
    assert len(problems) >= 48 and all(p.mode in MIXED_MODES for p in problems)
    try:
        import datasets  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install datasets"):
            load_problems(EnvConfig(source="someone/some-dataset"), MIXED_MODES)
    with pytest.raises(DataError, match="no such file"):
        load_problems(EnvConfig(source="/nonexistent/problems.jsonl"), MIXED_MODES)


@pytest.mark.parametrize("mode", list(Mode))
def test_prompt_hint_replaces_the_target_phrase(mode):
    problem = embedded_problems()[0]
    system, user = render_prompt(problem, mode)
    assert system == {"role": "system", "content": SYSTEM_PROMPT}
    assert user["role"] == "user"
    assert HINT_TARGET not in user["content"]
    assert user["content"].count(MODES[mode].hint) == 1
    assert f"called {problem.method} {MODES[mode].hint}. Use the following starter code" in user["content"]
    assert user["content"].startswith(f"PROBLEM:\n{problem.description}\n\n")
    assert f"```python\nclass Solution:\n    {problem.signature}\n        # Add your code here\n```" in user["content"]
    assert user["content"].endswith("\n\nSOLUTION:\n")


def test_unhinted_prompt_and_missing_phrase():
    problem = embedded_problems()[0]
    assert render_prompt(problem, None)[1]["content"].count(HINT_TARGET) == 1
    with pytest.raises(ValueError, match="exactly once"):
        apply_hint("a prompt without the phrase", Mode.run_tests)


def test_hack_pairs_are_restricted_to_the_given_modes():
    problems = embedded_problems()[:5]
    modes = [Mode.sentinel, Mode.run_tests]
    pairs = contrastive_pairs(problems, modes)
    assert len(pairs) == len(problems) * len(modes)
    assert [(p.problem_id, p.mode) for p in pairs] == [(q.id, m) for q in problems for m in modes]
    for pair in pairs:
        assert isinstance(pair, Pair) and pair.mode in modes
        assert MODES[pair.mode].hint in pair.prompt_messages[1]["content"]
        assert pair.hack_completion != pair.clean_completion
        assert pair.hack_completion.count("```python") == 1 and pair.clean_completion.count("```python") == 1
    assert contrastive_pairs(problems, modes) == pairs  # deterministic


def test_nonhack_pairs_use_two_different_honest_completions():
    problems = embedded_problems()[:5]
    for pair in contrastive_pairs(problems, [Mode.exit_code], kind="nonhack"):
        problem = next(p for p in problems if p.id == pair.problem_id)
        assert pair.hack_completion != pair.clean_completion
        assert pair.clean_completion == honest(problem, 0) and pair.hack_completion == honest(problem, 1)
    with pytest.raises(ValueError, match="kind"):
        contrastive_pairs(problems, [Mode.exit_code], kind="other")
