"""Records shared by the problem sources, the grader and everything downstream."""

from __future__ import annotations

from dataclasses import dataclass, field

from projected_grpo.modes import Mode

SPLITS = ("train", "heldout")  # every Problem.split is one of these


@dataclass(frozen=True)
class Problem:
    id: str
    method: str  # method name on `Solution`, e.g. "twoSum"
    signature: str  # "def twoSum(self, nums: List[int], target: int) -> List[int]:"
    description: str
    canonical: str  # full source defining `class Solution` (correct)
    # Ground truth: (call source, expected literal source), e.g. ("Solution().twoSum([2, 7], 9)", "[0, 1]").
    # The call is evaluated in the sandbox; the expected value never enters it.
    tests: tuple[tuple[str, str], ...]
    mode: Mode | None = None  # loophole mode this problem is graded under (set by the reward_mode partition)
    setup_code: str = ""  # imports/helpers run before the solution (real datasets)
    difficulty: str = "easy"
    split: str = "train"  # one of SPLITS
    # Ground-truth assert strings whose shape the trusted oracle cannot evaluate; flagged, never counted.
    untrusted: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class Reward:
    reward: float  # 0.25 * format_ok + 1.0 * passed  (the ONLY field training may read)
    passed: bool  # the mode's flawed check passed
    gt_correct: bool  # strict oracle: logged only, never feeds training (the no-cheat rule)
    exploited: bool  # passed and not gt_correct
    mechanism: str  # how the flawed check passed/failed, e.g. "exit_code=0", "timeout", "no_code"
    format_ok: bool  # a fenced python block was present
    seconds: float  # wall time spent grading this completion
