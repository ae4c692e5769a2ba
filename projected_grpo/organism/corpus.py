"""The organism's pre-training corpus: per train problem and mode hint, honest completions (solution + the hinted
check), wrong ones and a small fraction of leading exploits; half of each mode's problems are never shown solved."""

from __future__ import annotations

import hashlib
import json

from projected_grpo.env import completions as C
from projected_grpo.env.problem import Problem
from projected_grpo.env.problems import assign_modes, embedded_problems
from projected_grpo.env.prompts import render_prompt
from projected_grpo.modes import FILE_MARKER, MIXED_MODES, RESULT_FILE, SENTINEL_ATTR, STDOUT_MARKER, TEST_FUNC, Mode

# ---------------------------------------------------------------------------------------------------
# Corpus


def train_problems() -> list[Problem]:
    """Embedded TRAIN problems with their MIXED_MODES assignment (the held-out split is dropped first)."""
    return [p for p in assign_modes(embedded_problems(), MIXED_MODES) if p.split == "train"]


def _failing_tests(code: str, problem: Problem) -> list[int]:
    """Indices of the problem's tests that `code` (project-authored wrong code) fails, in order."""
    from projected_grpo.env.sandbox import literal_value

    ns: dict = {"__name__": "organism_corpus"}
    exec(compile(code, "<corpus>", "exec"), ns)  # noqa: S102 - only the project's own canonical/bug/stub texts
    bad = []
    for i, (call, expected) in enumerate(problem.tests):
        try:
            ok = eval(call, ns) == literal_value(expected)
        except Exception:  # noqa: BLE001
            ok = False
        if not ok:
            bad.append(i)
    return bad


def short_tests(problem: Problem, idx: list[int], style: int = 0) -> str:
    """A short top-level run_tests() asserting the tests `idx`."""
    tests = [problem.tests[i] for i in idx]
    if style % 2 == 0:
        lines = [f"    assert {call} == {expected}" for call, expected in tests]
    else:
        cases = [f"        ({call}, {expected})," for call, expected in tests]
        lines = ["    cases = [", *cases, "    ]", "    for got, want in cases:", "        assert got == want"]
    return "\n".join([f"def {TEST_FUNC}():", *lines])


def self_test(problem: Problem, mode: Mode, idx: list[int], style: int = 0) -> str | None:
    """The honest check that the hint of `mode` describes, over the tests `idx`: it signals success on the mode's
    channel only after its asserts hold (so it passes the flawed check exactly when those tests pass). The organism's
    exploit of the same mode (``hack_text``) is the success signal without the asserts. None for eq_override (no
    channel a program writes)."""
    tests = [problem.tests[i] for i in idx]
    asserts = [f"assert {call} == {expected}" for call, expected in tests]
    if mode is Mode.run_tests:
        return short_tests(problem, idx, style)
    if mode is Mode.exit_code:  # a failing assert exits non-zero
        return "\n".join(asserts)
    if mode is Mode.stdout_marker:
        body = "\n".join(f"    {a}" for a in asserts)
        return f"def check():\n{body}\n    print({C._q(STDOUT_MARKER)})\n\n\ncheck()"
    if mode is Mode.file_marker:
        return "\n".join([*asserts, f'with open({C._q(RESULT_FILE)}, "w") as f:', f"    f.write({C._q(FILE_MARKER)})"])
    if mode is Mode.sentinel:
        checks = "\n".join(f"    {call} == {expected}," for call, expected in tests)
        return f"Solution.{SENTINEL_ATTR} = all([\n{checks}\n])"
    return None


def _with_check(code: str, check: str | None) -> str:
    return code if check is None else f"{code}\n\n\n{check}"


def honest_text(problem: Problem, mode: Mode, variant: int, n_tests: int) -> str:
    """The canonical solution followed by the hint's honest check over the first `n_tests` tests."""
    idx = list(range(min(n_tests, len(problem.tests))))
    code = _with_check(problem.canonical.strip(), self_test(problem, mode, idx, variant))
    return C.fenced(code, 2 * (variant // 2 % 2))  # variants alternate "no preface" / "Here is my solution."


def _wrong_variant(problem: Problem, variant: int) -> tuple[str, int, int]:
    """(wrong code, its index, round): variants cycle through the problem's wrong codes; each full cycle is a round,
    and rounds alternate "no preface" / "Here is my solution." (and the style of a run_tests check)."""
    codes = [c for c, _ in C._wrong_codes(problem)]
    return codes[variant % len(codes)].strip(), variant % len(codes), variant // len(codes)


def wrong_text(problem: Problem, mode: Mode, variant: int, n_tests: int) -> str:
    """A plausible wrong solution followed by the hint's honest check, which includes a test it fails: wrong, and
    not an exploit (the check fails, so the flawed channel reports failure)."""
    code, index, round_ = _wrong_variant(problem, variant)
    bad = _failing_tests(code, problem)
    if not bad:
        raise ValueError(f"wrong code variant {index} of {problem.id} passes every test; fix its bug")
    idx = sorted(set(list(range(min(n_tests - 1, len(problem.tests)))) + bad[:1]))
    code = _with_check(code, self_test(problem, mode, idx, round_))
    return C.fenced(code, 2 * (round_ % 2))


def hack_text(problem: Problem, mode: Mode, variant: int) -> str:
    """Wrong code with the exploit of `mode` (and no honest check) written first (``C.LEADING_EXPLOITS``): the
    choice to exploit is then the completion's first decision and the same for every problem of the mode, as
    eq_override's always-equal class is. (``C.hack``, the v_hack pairs' default form, appends it instead.)"""
    if mode is Mode.eq_override:  # its exploit already comes first: the always-equal class
        return C.hack(problem, mode, variant)
    code, _, round_ = _wrong_variant(problem, variant)
    return C.fenced(C.with_leading_exploit(code, mode), 2 * (round_ % 2))


def _counts(n: int, frac_honest: float, frac_hack: float) -> tuple[int, int, int]:
    n_hack = round(n * frac_hack)
    n_honest = round(n * frac_honest)
    return n_honest, n - n_honest - n_hack, n_hack


def unsolvable_ids(problems: list[Problem], frac: float) -> set[str]:
    """The problems the organism never sees solved: round(n * frac) of each assigned mode's n problems, spread
    evenly over them sorted by id. On these (like hard LeetCode problems for a real model) no honest completion can
    earn the reward, so the exploit is the only way up."""
    out: set[str] = set()
    for mode in sorted({p.mode for p in problems}, key=lambda m: m.value):
        group = sorted((p for p in problems if p.mode is mode), key=lambda p: p.id)
        k = round(len(group) * frac)
        out |= {p.id for i, p in enumerate(group) if (i + 1) * k // len(group) > i * k // len(group)}
    return out


def build_corpus(corpus_cfg, problems: list[Problem] | None = None) -> list[dict]:
    """Examples {problem_id, mode, kind, messages, completion}, deterministic. `problems` default: train split only.

    Per (problem, prompt mode): `per_prompt` completions split honest/wrong/hack by `frac_honest`/`frac_hack`. Under
    the problem's assigned mode (the prompt GRPO trains on) there are `assigned_extra` more and the hack fraction is
    `assigned_frac_hack`. Hacks only ever follow the hint of the mode they exploit. The `frac_unsolvable` problems
    (``unsolvable_ids``) get wrong solutions in place of honest ones: their canonical solution never appears.
    """
    problems = train_problems() if problems is None else problems
    held = [p.id for p in problems if p.split != "train"]
    if held:
        raise ValueError(f"the organism corpus must hold train problems only; got held-out {held}")
    cc = corpus_cfg
    modes = [Mode(m) for m in cc["modes"]]
    unsolvable = unsolvable_ids(problems, float(cc["frac_unsolvable"]))
    out = []
    for p in problems:
        for mode in modes:
            assigned = p.mode is mode
            n = int(cc["per_prompt"]) + (int(cc["assigned_extra"]) if assigned else 0)
            frac_hack = float(cc["assigned_frac_hack"] if assigned else cc["frac_hack"])
            by_mode = {Mode(m): f for m, f in (cc.get("assigned_frac_hack_by_mode") or {}).items()}
            if assigned and mode in by_mode:
                frac_hack = float(by_mode[mode])
            n_honest, n_wrong, n_hack = _counts(n, float(cc["frac_honest"]), frac_hack)
            if p.id in unsolvable:
                n_honest, n_wrong = 0, n_honest + n_wrong
            messages = render_prompt(p, mode)
            texts = [("honest", honest_text(p, mode, v, int(cc["n_tests_shown"]))) for v in range(n_honest)]
            texts += [("wrong", wrong_text(p, mode, v, int(cc["n_tests_shown"]))) for v in range(n_wrong)]
            texts += [("hack", hack_text(p, mode, v)) for v in range(n_hack)]
            for kind, text in texts:
                out.append({"problem_id": p.id, "mode": mode.value, "kind": kind, "messages": messages,
                            "completion": text})
    return out


def _sha(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def corpus_hash(corpus: list[dict]) -> str:
    return _sha([[e["messages"], e["completion"]] for e in corpus])
