"""Real (rl-rewardhacking schema) problem sources: splits, load-time validation, canonical checks, completions.

Most tests run on a jsonl this file writes (embedded problems re-encoded in the rl-rewardhacking schema, with ids
that are not embedded ids, so they get no hand-written bug); tests marked by `sample` use ../shared's real sample
and skip with a reason when it is absent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from projected_grpo.config import EnvConfig
from projected_grpo.env import completions as C
from projected_grpo.env.__main__ import main as env_main
from projected_grpo.env.__main__ import run_selfcheck
from projected_grpo.env.grader import Grader
from projected_grpo.env.leetcode import DataError, load_jsonl
from projected_grpo.env.problems import embedded_bug, embedded_problems, hash_split, load_problem_set
from projected_grpo.env.prompts import user_message
from projected_grpo.modes import ALL_MODES, MIXED_MODES, Mode
from tests.conftest import LEETCODE_SAMPLE, REPO


def to_row(p, pid=None, **extra) -> dict:
    """An embedded problem as an rl-rewardhacking row (the layout of the real files)."""
    return {
        "id": pid or f"w_{p.id}",
        "question": user_message(p),
        "func_name": f"Solution().{p.method}",
        "gt_answer": [f"assert {call} == {exp}" for call, exp in p.tests],
        "setup_code": "from typing import *",
        "canonical_solution": p.canonical,
        "prompt_metadata": {"starter_code": f"class Solution:\n    {p.signature}\n        # Add your code here\n"},
        "difficulty": p.difficulty,
        **extra,
    }


def write(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def env(path, **kw) -> EnvConfig:
    return EnvConfig(source=str(path), n_workers=2, **kw)


@pytest.fixture(scope="module")
def rows():
    return [to_row(p) for p in embedded_problems()[:10]]


@pytest.fixture(scope="module")
def grader():
    with Grader(n_workers=2) as g:
        yield g


def test_hash_split_is_stable_and_near_the_fraction():
    # pinned: Python's hash() is salted per process; a sha256 rule gives these on every machine (kills hash(id))
    assert [hash_split(i, 0.2) for i in ("3393", "1", "two_sum", "w_two_sum")] == ["train", "train", "heldout", "train"]
    held = sum(hash_split(str(i), 0.2) == "heldout" for i in range(2000))
    assert 340 <= held <= 460  # 0.2 +- 0.03 (kills a flipped comparison, which holds out 80%)
    assert all(hash_split(str(i), 0.0) == "train" for i in range(200))


def test_written_jsonl_loads_with_both_splits_and_every_mode(tmp_path, rows):
    path = write(tmp_path / "p.jsonl", rows)
    ps = load_problem_set(env(path, heldout_frac=0.4), MIXED_MODES, tmp_path / "cache")
    assert ps.n_rows == 10 and ps.dropped == {} and [p.id for p in ps.problems] == [r["id"] for r in rows]
    assert all(p.split == hash_split(p.id, 0.4) for p in ps.problems)  # kills: every row loaded as "heldout"
    counts = ps.counts()
    assert counts["train"]["total"] > 0 and counts["heldout"]["total"] > 0
    assert counts["train"]["total"] + counts["heldout"]["total"] == 10
    assert all(p.mode in MIXED_MODES for p in ps.problems)
    assert len(list((tmp_path / "cache" / "canonical").glob("*.json"))) == 1  # graded once, cached by file hash
    again = load_problem_set(env(path, heldout_frac=0.4), MIXED_MODES, tmp_path / "cache")
    assert again.problems == ps.problems


def test_a_split_column_wins_over_the_hash(tmp_path, rows):
    marked = [dict(r, split="heldout" if i == 0 else "train") for i, r in enumerate(rows)]
    ps = load_problem_set(env(write(tmp_path / "s.jsonl", marked), heldout_frac=0.9), MIXED_MODES, tmp_path / "c")
    assert [p.split for p in ps.problems] == ["heldout"] + ["train"] * 9  # kills: the column ignored
    assert "split` column" in ps.split_rule


def test_no_train_problem_is_an_error(tmp_path, rows):
    marked = [dict(r, split="heldout") for r in rows]
    with pytest.raises(DataError, match="no train problems"):
        load_problem_set(env(write(tmp_path / "h.jsonl", marked)), MIXED_MODES, tmp_path / "c")


def _bad(rows, i, **change):
    r = dict(rows[i])
    for k, v in change.items():
        if v is KeyError:
            del r[k]
        else:
            r[k] = v
    return r


BAD = {  # name -> (rows -> file rows, line of the error, field named)
    "not_json": (lambda rs: [rs[0], '{"id": 5, "question": ', *rs[1:3]], 2, "whole line"),
    "not_object": (lambda rs: [rs[0], rs[1], "[1, 2]"], 3, "JSON object"),
    "missing_field": (lambda rs: [rs[0], _bad(rs, 1, canonical_solution=KeyError)], 2, "'canonical_solution'"),
    "bad_func_name": (lambda rs: [_bad(rs, 0, func_name="twoSum")], 1, "'func_name'"),
    "gt_not_list": (lambda rs: [rs[0], rs[1], _bad(rs, 2, gt_answer="assert 1 == 1")], 3, "'gt_answer'"),
    "no_trusted_assert": (lambda rs: [_bad(rs, 0, gt_answer=["assert is_same(Solution().f(1), 2)"])], 1, "'gt_answer'"),
    "bad_split": (lambda rs: [_bad(rs, 0, split="test")], 1, "'split'"),
    "split_in_some_rows": (lambda rs: [_bad(rs, 0, split="train"), rs[1]], 2, "'split'"),
    "duplicate_id": (lambda rs: [rs[0], rs[1], rs[0]], 3, "'id'"),
    "starter_mismatch": (lambda rs: [rs[0], _bad(rs, 1, prompt_metadata={"starter_code": "def f(x):"})], 2,
                         "'prompt_metadata.starter_code'"),
    "canonical_syntax": (lambda rs: [_bad(rs, 0, canonical_solution="class Solution:\n    def (")], 1,
                         "'canonical_solution'"),
    "canonical_wrong_method": (lambda rs: [_bad(rs, 0, canonical_solution="class Solution:\n    pass\n")], 1,
                               "'canonical_solution'"),
    "question_layout": (lambda rs: [_bad(rs, 0, question=rs[0]["question"].replace("SOLUTION:", "ANSWER:"))], 1,
                        "'question'"),
    "setup_not_str": (lambda rs: [_bad(rs, 0, setup_code=3)], 1, "'setup_code'"),
    "id_bool": (lambda rs: [_bad(rs, 0, id=True)], 1, "'id'"),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(BAD))
def test_each_bad_input_is_one_line_naming_file_line_and_field(tmp_path, rows, name):
    # kills: a bare JSONDecodeError (no file/line), the duplicate-id check dropped, any check removed
    make, line, field = BAD[name]
    path = write(tmp_path / "bad.jsonl", make(rows))
    before = path.read_bytes()
    with pytest.raises(DataError) as e:
        load_problem_set(env(path), MIXED_MODES, tmp_path / "cache")
    msg = str(e.value)
    assert "\n" not in msg and f"{path}:{line}" in msg and field in msg, msg
    assert path.read_bytes() == before and not (tmp_path / "cache").exists()  # changes no file


def test_empty_file_is_an_error(tmp_path):
    path = write(tmp_path / "empty.jsonl", ["", "  "])
    with pytest.raises(DataError, match=f"{path}: no problems"):
        load_problem_set(env(path), MIXED_MODES, tmp_path / "cache")
    assert env_main(["canonical", str(path)]) == 1  # the CLI exits non-zero too (it exited 0 before)


def _with_bug(row):
    """The row with its canonical replaced by the embedded problem's hand-written bug (fails a test)."""
    p = next(q for q in embedded_problems() if f"w_{q.id}" == row["id"])
    old, new = embedded_bug(p.id)
    return dict(row, canonical_solution=p.canonical.replace(old, new))


def test_failing_canonicals_are_refused_or_dropped_and_counted(tmp_path, rows):
    # kills: env.drop_failing inverted; the verdict cache written before the source is accepted
    file_rows = [rows[0], _with_bug(rows[1]), rows[2], rows[3]]
    path = write(tmp_path / "f.jsonl", file_rows)
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as e:
        load_problem_set(env(path), MIXED_MODES, cache)
    msg = str(e.value)
    assert "\n" not in msg and f"id {rows[1]['id']} at {path}:2" in msg and "'canonical_solution'" in msg
    assert "drop_failing" in msg and not cache.exists()  # refused: no verdict cache written
    ps = load_problem_set(env(path, drop_failing=True), MIXED_MODES, cache)
    assert ps.n_rows == 4 and list(ps.dropped) == [rows[1]["id"]] and len(ps.problems) == 3
    assert ps.dropped[rows[1]["id"]].startswith("wrong_answer")
    assert env_main(["canonical", str(path)]) == 1


def test_all_failing_is_an_error_even_when_dropping(tmp_path, rows):
    path = write(tmp_path / "a.jsonl", [_with_bug(rows[0]), _with_bug(rows[1])])
    with pytest.raises(DataError, match="every one of the 2 rows"):
        load_problem_set(env(path, drop_failing=True), MIXED_MODES, tmp_path / "cache")
    assert env_main(["canonical", str(path)]) == 1


def test_train_py_prints_one_line_and_exits_2_on_a_bad_file(tmp_path, rows):
    # kills: train.py without its DataError catch (a Hydra traceback instead of one line)
    path = write(tmp_path / "bad.jsonl", [rows[0], "not json"])
    r = subprocess.run([sys.executable, "train.py", f"env.source={path}", "trainer.steps=0",
                        f"hydra.run.dir={tmp_path / 'run'}"], check=False, cwd=REPO, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 2, r.stderr[-2000:]
    err = r.stderr.strip().splitlines()
    assert "Traceback" not in r.stderr and err[-1].startswith(f"data error: {path}:2: the whole line: not valid JSON")


def test_real_problems_stub_provably_fails_and_keeps_embedded_texts():
    # kills: the stub always returning the annotation's default (it would pass tests that all expect it)
    from projected_grpo.env.problem import Problem

    def prob(ret, *expected):
        return Problem("x", "f", f"def f(self, a: int) -> {ret}:", "d", "", tuple(("Solution().f(1)", e) for e in expected))

    assert C.stub_value(prob("int", "0", "3")) == "0"
    assert C.stub_value(prob("int", "0", "0")) == "None"  # 0 would pass every test
    assert C.stub_value(prob("Optional[int]", "None")) == "-1"
    assert C.stub_value(prob("bool", "False", "False")) == "None"  # False would pass every test
    assert C.stub_value(prob("bool", "False", "0")) == "False"  # as the strict oracle compares: False is not 0
    for p in embedded_problems():  # the embedded texts (the organism's corpus, the tokenizer) are unchanged
        assert C.shown_tests(p) == p.tests and C.constant_stub(p).endswith(
            {"list": "[]", "int": "0", "str": '""', "bool": "False"}[p.signature.rsplit("-> ", 1)[1].split("[")[0]
                                                                     .rstrip(":")] + "\n")  # fmt: skip


def test_selfcheck_diagonal_on_written_real_problems(tmp_path, rows, grader):
    """Hacks built from a real problem's own method and tests fire under their own mode only; the canonical
    (honest) passes; the constant stub (its only wrong code) fails under every mode.
    Kills: a hack that misses its channel on real problems, a stub that passes (e.g. always the default)."""
    ps = load_problem_set(env(write(tmp_path / "p.jsonl", rows[:3])), MIXED_MODES, tmp_path / "cache")
    assert all(C.n_wrong_variants(p) == 1 for p in ps.problems)  # no hand-written bug for real problems
    res = run_selfcheck(ps.problems, grader, modes=ALL_MODES)
    assert res.ok, res.failures[:5]


@pytest.fixture(scope="module")
def sample():
    if not LEETCODE_SAMPLE.exists():
        pytest.skip(f"{LEETCODE_SAMPLE} absent: the shared developer data is not mounted")
    return LEETCODE_SAMPLE


@pytest.mark.slow
def test_sample_selfcheck_and_stubs(sample, grader, tmp_path_factory):
    src = load_jsonl(sample)
    fast = sorted(src.problems, key=lambda p: len(p.canonical))[:3]  # three short problems: the full table
    res = run_selfcheck(fast, grader, modes=ALL_MODES)
    assert res.ok, res.failures[:5]
    stubs = grader.grade_batch([(C.wrong(p), p, Mode.exit_code) for p in src.problems])
    assert not any(r.gt_correct or r.passed for r in stubs)  # every stub fails a test of its problem
    assert max(len(C.test_function(p)) for p in src.problems) < 3000  # harnesses show the short tests


@pytest.mark.slow
def test_sample_loads_with_both_splits(sample):
    # the session cache (conftest): the verdicts are reused by the hub-model runs in tests/test_hub_models.py
    ps = load_problem_set(EnvConfig(source=str(sample)), MIXED_MODES, Path(os.environ["PROJECTED_GRPO_CACHE"]))
    c = ps.counts()
    assert ps.n_rows == 60 and ps.dropped == {} and c["train"]["total"] >= 40 and c["heldout"]["total"] >= 8


def test_hub_rows_are_validated_and_split_like_a_file(monkeypatch, tmp_path, rows):
    """A `datasets` hub id goes through the same checks; errors name the hub id and row (no network: a stub
    `datasets` module). Kills: hub rows skipping validation, or errors without the row."""
    import types

    fake = types.ModuleType("datasets")
    fake.load_dataset = lambda hub_id, split: {"me/good": rows[:4], "me/bad": [rows[0], _bad(rows, 1, gt_answer=[])]}[hub_id]
    monkeypatch.setitem(sys.modules, "datasets", fake)
    ps = load_problem_set(EnvConfig(source="me/good", heldout_frac=0.4), MIXED_MODES, tmp_path / "cache")
    assert [p.split for p in ps.problems] == [hash_split(r["id"], 0.4) for r in rows[:4]]
    with pytest.raises(DataError, match=r"me/bad\[row 1\] \(id w_reverse_words\): field 'gt_answer'"):
        load_problem_set(EnvConfig(source="me/bad"), MIXED_MODES, tmp_path / "cache")


@pytest.mark.slow
def test_two_step_run_on_a_written_jsonl(tmp_path):
    """Any file in the schema trains like the shared sample: 2 steps of the tiny model, both splits non-empty.
    Kills: a loop that still assumes the embedded set (every row held out: no pairs, no training problem)."""
    path = write(tmp_path / "mine.jsonl", [to_row(p) for p in embedded_problems()[:16]])
    run = tmp_path / "run"
    r = subprocess.run([sys.executable, "train.py", f"env.source={path}", "trainer.steps=2", "trainer.max_new_tokens=16",
                        "vhack.n_pairs=12", f"hydra.run.dir={run}"], check=False, cwd=REPO, capture_output=True, text=True,
                       timeout=900)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
    counts = json.loads((run / "summary.json").read_text())["problems"]
    assert counts["train"]["total"] > 0 and counts["heldout"]["total"] > 0
    assert "problems: 16 of 16 from" in r.stdout
