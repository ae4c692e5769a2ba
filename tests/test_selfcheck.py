"""The hack x mode diagonal (python -m projected_grpo.env selfcheck)."""

from __future__ import annotations

import pytest

from projected_grpo.env import completions
from projected_grpo.env.__main__ import format_matrix, main, run_selfcheck
from projected_grpo.env.grader import Grader
from projected_grpo.env.problems import embedded_problems
from projected_grpo.modes import ALL_MODES, Mode


@pytest.fixture(scope="module")
def grader():
    with Grader(n_workers=2) as g:
        yield g


def test_diagonal_on_a_few_problems(grader):
    problems = embedded_problems()[::15]
    res = run_selfcheck(problems, grader)
    assert res.ok, res.failures
    for (h, c), ids in res.exploited.items():
        assert len(ids) == (len(problems) * completions.N_HACK_VARIANTS if h is c else 0)


@pytest.mark.slow
def test_full_selfcheck_cli(capsys):
    assert main(["selfcheck"]) == 0
    out = capsys.readouterr().out
    assert "OK:" in out and "!" not in out.split("\n", 1)[1]


def test_a_broken_table_is_detected(grader):
    def broken_hack(problem, mode, variant=0):  # the sentinel row secretly uses the stdout exploit
        return completions.hack(problem, Mode.stdout_marker if mode is Mode.sentinel else mode, variant)

    problems = embedded_problems()[:2]
    res = run_selfcheck(problems, grader, hack=broken_hack)
    assert not res.ok
    assert any("hack[sentinel] does not fire on its own mode" in f for f in res.failures)
    assert any("hack[sentinel] also fires" in f and "stdout_marker" in f for f in res.failures)
    assert "!" in format_matrix(res)


def test_a_wrong_completion_that_passes_is_detected(grader):
    res = run_selfcheck(embedded_problems()[:1], grader, wrong=lambda p, v=0: completions.honest(p, v))
    assert not res.ok and any(f.startswith("wrong completion passed=True") for f in res.failures)


def test_leading_form_hacks_fire_on_their_own_mode_only(grader):
    # The organism's form (exploit first) as v_hack pairs can use it (vhack.exploit_form=leading): each leading hack
    # passes exactly its mode's flawed check and is never correct.
    # kills: with_leading_exploit putting the wrong mode's exploit first, or dropping the exploit
    res = run_selfcheck(embedded_problems()[::20], grader, hack=completions.leading_hack)
    assert res.ok, res.failures


def test_leading_and_trailing_pairs_differ_only_in_where_the_exploit_is():
    # kills: contrastive_pairs ignoring exploit_form (identical texts), or leading_hack writing other code
    problems, modes = embedded_problems()[:3], list(ALL_MODES)
    trailing = completions.contrastive_pairs(problems, modes, "hack", "trailing")
    leading = completions.contrastive_pairs(problems, modes, "hack", "leading")
    moved = {Mode.run_tests, Mode.exit_code, Mode.stdout_marker, Mode.file_marker}
    for t, lead in zip(trailing, leading):
        assert (t.prompt_messages, t.clean_completion, t.mode) == (lead.prompt_messages, lead.clean_completion, lead.mode)
        assert (t.hack_completion != lead.hack_completion) == (t.mode in moved)
        assert sorted(filter(str.strip, t.hack_completion.splitlines())) == sorted(
            filter(str.strip, lead.hack_completion.splitlines())
        )
    with pytest.raises(ValueError, match="exploit_form"):
        completions.contrastive_pairs(problems, modes, "hack", "middle")
