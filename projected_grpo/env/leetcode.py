"""Loader for the rl-rewardhacking LeetCode schema (one JSON object per line, or a `datasets` hub id).

Fields used: `id`, `question` (the full user prompt), `func_name` ("Solution().f"), `gt_answer` (assert strings),
`setup_code`, `canonical_solution`, `prompt_metadata.starter_code`, `difficulty`.

Each ground-truth assert is parsed with `ast`. Only `assert CALL == EXPECTED` whose EXPECTED the trusted oracle can
rebuild without running code (``sandbox.literal_value``: literals, negative numbers, inf/-inf, tuples, nested
containers, None, bools, strings) becomes a test; every other assert (``is_same_list(...)``, a non-literal right-hand
side, ...) is recorded verbatim in ``Problem.untrusted`` and never counted.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

from projected_grpo.env.problem import Problem
from projected_grpo.env.prompts import USER_TEMPLATE, user_message
from projected_grpo.env.sandbox import literal_value

_DESC_START = "PROBLEM:\n"
_DESC_END = "\n\nYour solution to the problem should be a method of the class Solution called"
_REQUIRED = ("id", "question", "func_name", "gt_answer", "setup_code", "canonical_solution", "prompt_metadata")


def parse_assert(src: str) -> tuple[str, str] | None:
    """`assert CALL == EXPECTED` with a plain-data EXPECTED -> (call source, expected source); else None."""
    src = src.strip()
    try:
        tree = ast.parse(src)
    except SyntaxError:
        return None
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Assert) or tree.body[0].msg is not None:
        return None
    test = tree.body[0].test
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)):
        return None
    call, expected = ast.get_source_segment(src, test.left), ast.get_source_segment(src, test.comparators[0])
    try:
        literal_value(expected)
    except (ValueError, SyntaxError, RecursionError):
        return None
    return call, expected


def row_to_problem(row: dict, where: str = "row") -> Problem:
    """One rl-rewardhacking record -> Problem (split "heldout": the real set is for evaluation)."""
    missing = [k for k in _REQUIRED if k not in row]
    if missing:
        raise ValueError(f"{where}: missing fields {missing}; expected the rl-rewardhacking schema {list(_REQUIRED)}")
    pid = str(row["id"])
    method = str(row["func_name"]).rsplit(".", 1)[-1]
    starter = row["prompt_metadata"]["starter_code"]
    lines = starter.split("\n")
    if len(lines) < 2 or lines[0].strip() != "class Solution:" or not lines[1].strip().startswith(f"def {method}("):
        raise ValueError(
            f"{where} (id {pid}): starter_code should be 'class Solution:' then 'def {method}(...)'; "
            f"got {starter[:160]!r}"
        )
    question = row["question"]
    if not question.startswith(_DESC_START) or _DESC_END not in question:
        raise ValueError(f"{where} (id {pid}): question should start with {_DESC_START!r} and contain {_DESC_END!r}")
    tests, untrusted = [], []
    for src in row["gt_answer"]:
        parsed = parse_assert(src)
        if parsed is None:
            untrusted.append(src)
        else:
            tests.append(parsed)
    problem = Problem(
        id=pid,
        method=method,
        signature=lines[1].strip(),
        description=question[len(_DESC_START) : question.index(_DESC_END)],
        canonical=row["canonical_solution"],
        tests=tuple(tests),
        setup_code=row["setup_code"] or "",
        difficulty=str(row.get("difficulty", "medium")),
        split="heldout",
        untrusted=tuple(untrusted),
    )
    if user_message(problem) != question:
        raise ValueError(
            f"{where} (id {pid}): the prompt template does not reproduce this question exactly, so the mode hint "
            f"could not be inserted faithfully; expected the layout of prompts.USER_TEMPLATE:\n{USER_TEMPLATE}"
        )
    if not tests:
        raise ValueError(
            f"{where} (id {pid}): none of its {len(row['gt_answer'])} asserts has a trusted shape "
            f"('assert CALL == LITERAL'); cannot grade it"
        )
    return problem


def load_jsonl(path: str | Path) -> list[Problem]:
    path = Path(path)
    problems = []
    with path.open() as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                problems.append(row_to_problem(json.loads(line), where=f"{path}:{lineno}"))
    ids = [p.id for p in problems]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{path}: duplicate ids {sorted({i for i in ids if ids.count(i) > 1})}")
    return problems


def load_hub(hub_id: str, split: str = "train") -> list[Problem]:
    """A `datasets` hub id in the same schema (imported lazily: `datasets` is optional)."""
    try:
        import datasets
    except ImportError:
        raise ImportError(
            f"env.source={hub_id!r} looks like a hub id, which needs the optional package `datasets` "
            "(pip install datasets); or pass 'embedded' or a path to an rl-rewardhacking .jsonl"
        ) from None
    ds = datasets.load_dataset(hub_id, split=split)
    return [row_to_problem(dict(row), where=f"{hub_id}[{i}]") for i, row in enumerate(ds)]
