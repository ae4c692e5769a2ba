"""Loader for the rl-rewardhacking LeetCode schema (one JSON object per line, or a `datasets` hub id).

Fields used: `id`, `question` (the full user prompt), `func_name` ("Solution().f"), `gt_answer` (assert strings),
`setup_code`, `canonical_solution`, `prompt_metadata.starter_code`, `difficulty` (optional) and `split` (optional:
"train" | "heldout"; when absent the split comes from ``problems.hash_split``).

Each ground-truth assert is parsed with `ast`. Only `assert CALL == EXPECTED` whose EXPECTED the trusted oracle can
rebuild without running code (``sandbox.literal_value``: literals, negative numbers, inf/-inf, tuples, nested
containers, None, bools, strings) becomes a test; every other assert (``is_same_list(...)``, a non-literal right-hand
side, ...) is recorded verbatim in ``Problem.untrusted`` and never counted.

Validation is fail-loud: every problem with a row raises ``DataError`` with ONE line naming the file and line (or the
hub id and row), the field, what was found and what was expected. ``check_canonicals`` then grades every canonical
solution under the strict oracle (cached by the source's hash), so a row whose reference answer fails its own tests
is refused (or dropped and counted, ``env.drop_failing=true``) before anything trains on it.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from projected_grpo.env.problem import SPLITS, Problem
from projected_grpo.env.prompts import USER_TEMPLATE, user_message
from projected_grpo.env.sandbox import literal_value

_DESC_START = "PROBLEM:\n"
_DESC_END = "\n\nYour solution to the problem should be a method of the class Solution called"
_REQUIRED = ("id", "question", "func_name", "gt_answer", "setup_code", "canonical_solution", "prompt_metadata")
_FUNC_NAME = re.compile(r"Solution\(\)\.([A-Za-z_]\w*)")
# Bump when parsing/validation changes what a row turns into (part of the canonical-check cache key).
LOADER_VERSION = 2


class DataError(ValueError):
    """A bad problem source. The message is one line: file:line (or hub id[row]), field, found, expected."""


@dataclass(frozen=True)
class Source:
    """Problems of one jsonl file or hub dataset, before canonical checks and mode assignment."""

    name: str  # the file path or hub id, as it appears in error messages
    digest: str  # sha256 of the source bytes (jsonl) or of its rows (hub); keys the canonical-check cache
    problems: tuple[Problem, ...]
    where: dict[str, str]  # problem id -> "path:line" or "hub_id[row i]"
    split_column: bool  # True when the rows carried a `split` column (it wins over env.heldout_frac)


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


def _short(x, n: int = 60) -> str:
    r = repr(x)
    return r if len(r) <= n else r[: n - 3] + "..."


def _err(where: str, field: str, found, expected: str) -> DataError:
    msg = f"{where}: field {field!r}: found {_short(found)}; expected {expected}"
    return DataError(" ".join(msg.split("\n")))  # one line, always


def _typed(row: dict, key: str, types: tuple, where: str, expected: str):
    if key not in row:
        raise DataError(f"{where}: field {key!r} is missing; expected the rl-rewardhacking schema {list(_REQUIRED)}")
    value = row[key]
    if not isinstance(value, types) or isinstance(value, bool):
        raise _err(where, key, value, expected)
    return value


def _defines_method(canonical: str, method: str) -> str | None:
    """None when `canonical` parses and defines class Solution with `method`, else what is wrong."""
    try:
        tree = ast.parse(canonical)
    except SyntaxError as e:
        return f"a SyntaxError ({e.msg}, line {e.lineno})"
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "Solution":
            if any(isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef) and f.name == method for f in node.body):
                return None
            return f"class Solution without a method {method!r}"
    return "no top-level class Solution"


def row_to_problem(row, where: str, split_of) -> Problem:
    """One rl-rewardhacking record -> Problem. `split_of(problem_id)` gives the split when the row has no
    `split` column. Raises DataError (one line: where, field, found, expected) on anything malformed."""
    if not isinstance(row, dict):
        raise DataError(f"{where}: found a JSON {type(row).__name__}; expected one JSON object per line")
    pid = _typed(row, "id", (int, str), where, "an integer or a non-empty string")
    pid = str(pid)
    if not pid.strip():
        raise _err(where, "id", pid, "an integer or a non-empty string")
    at = f"{where} (id {pid})"
    for key in _REQUIRED:
        if key not in row:
            raise DataError(f"{at}: field {key!r} is missing; expected the rl-rewardhacking schema {list(_REQUIRED)}")
    func_name = _typed(row, "func_name", (str,), at, "'Solution().methodName'")
    m = _FUNC_NAME.fullmatch(func_name)
    if m is None:
        raise _err(at, "func_name", func_name, "'Solution().methodName'")
    method = m.group(1)
    meta = _typed(row, "prompt_metadata", (dict,), at, "an object with a 'starter_code' string")
    starter = meta.get("starter_code")
    lines = starter.split("\n") if isinstance(starter, str) else []
    if len(lines) < 2 or lines[0].strip() != "class Solution:" or not lines[1].strip().startswith(f"def {method}("):
        raise _err(at, "prompt_metadata.starter_code", starter, f"'class Solution:' then 'def {method}(...)'")
    question = _typed(row, "question", (str,), at, "a string")
    if not question.startswith(_DESC_START) or _DESC_END not in question:
        raise _err(at, "question", question, f"text starting {_DESC_START!r} and containing {_DESC_END!r}")
    gt = _typed(row, "gt_answer", (list,), at, "a non-empty list of assert strings")
    if not gt or not all(isinstance(s, str) for s in gt):
        raise _err(at, "gt_answer", gt, "a non-empty list of assert strings")
    setup = row["setup_code"]
    if setup is not None and not isinstance(setup, str):
        raise _err(at, "setup_code", setup, "a string (or null)")
    canonical = _typed(row, "canonical_solution", (str,), at, "the source of a class Solution")
    problem_with = _defines_method(canonical, method)
    if problem_with is not None:
        raise _err(at, "canonical_solution", problem_with, f"Python source defining class Solution.{method}")
    difficulty = row.get("difficulty", "medium")
    if not isinstance(difficulty, str):
        raise _err(at, "difficulty", difficulty, "a string such as 'medium'")
    if "split" in row:
        split = row["split"]
        if split not in SPLITS:
            raise _err(at, "split", split, f"one of {list(SPLITS)} (or no split column: env.heldout_frac decides)")
    else:
        split = split_of(pid)
    tests, untrusted = [], []
    for src in gt:
        parsed = parse_assert(src)
        if parsed is None:
            untrusted.append(src)
        else:
            tests.append(parsed)
    if not tests:
        raise _err(at, "gt_answer", gt[0], f"at least one of its {len(gt)} asserts in the trusted shape "
                   "'assert CALL == LITERAL' (the oracle grades nothing else)")  # fmt: skip
    problem = Problem(
        id=pid,
        method=method,
        signature=lines[1].strip(),
        description=question[len(_DESC_START) : question.index(_DESC_END)],
        canonical=canonical,
        tests=tuple(tests),
        setup_code=setup or "",
        difficulty=difficulty,
        split=split,
        untrusted=tuple(untrusted),
    )
    if user_message(problem) != question:
        raise _err(at, "question", question, "exactly the layout of prompts.USER_TEMPLATE (so the mode hint can "
                   f"replace its phrase faithfully): {USER_TEMPLATE[:80]!r}...")  # fmt: skip
    return problem


def _rows_to_source(name: str, digest: str, rows, split_of) -> Source:
    """rows: iterable of (where, row). Checks ids are unique and the source is not empty."""
    problems, where, has_split = [], {}, []
    for at, row in rows:
        p = row_to_problem(row, at, split_of)
        if p.id in where:
            raise DataError(f"{at}: field 'id': duplicate id {p.id!r} (first at {where[p.id]}); expected unique ids")
        where[p.id] = at
        problems.append(p)
        has_split.append("split" in row)
        if has_split[-1] != has_split[0]:
            raise DataError(f"{at}: field 'split': {'present' if has_split[-1] else 'absent'} here but not in the "
                            "first row; expected it in every row or in none")  # fmt: skip
    if not problems:
        raise DataError(f"{name}: no problems (empty, or only blank lines); expected one rl-rewardhacking JSON "
                        "object per line")  # fmt: skip
    return Source(name, digest, tuple(problems), where, has_split[0])


def load_jsonl(path: str | Path, split_of=lambda pid: "heldout") -> Source:
    """Parse and validate a jsonl file (nothing is written). `split_of(problem_id)` gives rows without a
    `split` column their split (load_problems passes the env.heldout_frac hash rule)."""
    path = Path(path)
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not UTF-8 ({e.reason}); expected a UTF-8 jsonl file") from None

    def rows():
        for lineno, line in enumerate(text.split("\n"), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: the whole line: not valid JSON ({e.msg} at column {e.colno}); "
                                "expected one JSON object per line") from None  # fmt: skip
            yield f"{path}:{lineno}", row

    return _rows_to_source(str(path), hashlib.sha256(data).hexdigest(), rows(), split_of)


def load_hub(hub_id: str, split_of=lambda pid: "heldout", hub_split: str = "train") -> Source:
    """A `datasets` hub id in the same schema (imported lazily: `datasets` is optional). Error messages name
    rows as hub_id[row i] (0-based, in the dataset's order)."""
    try:
        import datasets
    except ImportError:
        raise ImportError(
            f"env.source={hub_id!r} looks like a hub id, which needs the optional package `datasets` "
            "(pip install datasets); or pass 'embedded' or a path to an rl-rewardhacking .jsonl"
        ) from None
    ds = datasets.load_dataset(hub_id, split=hub_split)
    rows = [dict(r) for r in ds]
    digest = hashlib.sha256(json.dumps(rows, sort_keys=True, default=str).encode()).hexdigest()
    return _rows_to_source(hub_id, digest, ((f"{hub_id}[row {i}]", r) for i, r in enumerate(rows)), split_of)


# ---------------------------------------------------------------------------------------------------
# Canonical solutions, graded at load


def _check_key(source: Source, env_cfg) -> str:
    from projected_grpo.env.grader import GRADER_VERSION

    payload = [source.digest, LOADER_VERSION, GRADER_VERSION, float(env_cfg.time_floor_s), float(env_cfg.time_factor)]
    return hashlib.sha256(json.dumps(payload).encode()).hexdigest()[:24]


def canonical_verdicts(source: Source, env_cfg, cache_dir: Path | None) -> tuple[dict[str, str], Path | None, bool]:
    """id -> strict-oracle mechanism of every canonical solution ("all_equal" = correct), graded in one batch.
    Read from cache_dir/canonical/<key>.json when present (key: the source's hash, loader/grader versions and time
    limits). Returns (verdicts, cache path or None, whether it was read from the cache). Writes nothing."""
    path = Path(cache_dir) / "canonical" / f"{_check_key(source, env_cfg)}.json" if cache_dir is not None else None
    if path is not None and path.exists():
        stored = json.loads(path.read_text())
        if stored.get("digest") != source.digest or set(stored["verdicts"]) != {p.id for p in source.problems}:
            raise DataError(f"{source.name}: canonical-check cache {path} does not belong to this source; delete it")
        return stored["verdicts"], path, True
    from projected_grpo.env.grader import Grader
    from projected_grpo.modes import Mode

    items = [(f"```python\n{p.canonical}\n```", p, Mode.exit_code) for p in source.problems]
    with Grader(env_cfg.n_workers, env_cfg.time_floor_s, env_cfg.time_factor) as grader:
        rewards = grader.grade_batch(items)  # parallel; the oracle's verdict is gt_correct
        verdicts = {p.id: "all_equal" for p, r in zip(source.problems, rewards) if r.gt_correct}
        for p, r in zip(source.problems, rewards):
            if not r.gt_correct:  # rare: one more oracle run for the reason (e.g. wrong_answer:3, timeout)
                ok, mech, _ = grader.oracle(p.canonical, p)
                verdicts[p.id] = "failed_then_passed_on_rerun" if ok else mech
    return verdicts, path, False


def check_canonicals(source: Source, env_cfg, cache_dir: Path | None) -> tuple[list[Problem], dict[str, str]]:
    """(problems kept, {dropped id: mechanism}). Failing canonicals raise DataError naming each (id, line,
    mechanism) unless env.drop_failing; a source where every canonical fails is an error either way. The verdict
    cache is written only when the source is accepted (a refused source changes no file)."""
    verdicts, path, cached = canonical_verdicts(source, env_cfg, cache_dir)
    failed = {p.id: verdicts[p.id] for p in source.problems if verdicts[p.id] != "all_equal"}  # in source order
    listing = ", ".join(f"id {pid} at {source.where[pid]} ({mech})" for pid, mech in list(failed.items())[:8])
    listing += f", and {len(failed) - 8} more" if len(failed) > 8 else ""
    n = len(source.problems)
    if failed and len(failed) == n:
        raise DataError(f"{source.name}: field 'canonical_solution': fails its own tests in every one of the {n} rows "
                        f"({listing}); expected correct reference solutions, nothing is left to train on")  # fmt: skip
    if failed and not env_cfg.drop_failing:
        raise DataError(f"{source.name}: field 'canonical_solution': fails its own tests in {len(failed)} of {n} rows: "
                        f"{listing}; fix or remove those rows, or set env.drop_failing=true to drop them")  # fmt: skip
    if path is not None and not cached:
        from projected_grpo.atomic import write_json

        write_json(path, {"digest": source.digest, "name": source.name, "verdicts": verdicts}, indent=1)
    return [p for p in source.problems if p.id not in failed], failed

