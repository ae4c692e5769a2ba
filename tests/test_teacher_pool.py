"""The frozen teacher pool: build, cache hit, key mismatch, mode subset, proportions."""

from __future__ import annotations

import dataclasses
import json
import random

import pytest

from projected_grpo.config import TeacherConfig
from projected_grpo.env.grader import Grader
from projected_grpo.env.problems import assign_modes, embedded_problems
from projected_grpo.integrity import CHECKSUM, with_checksum
from projected_grpo.modes import MIXED_MODES, Mode
from projected_grpo.teacher_pool import TeacherSample, build_pool, plan_counts, pool_key, pool_path


@pytest.fixture(scope="module")
def grader():
    with Grader(n_workers=2) as g:
        yield g


@pytest.fixture(scope="module")
def problems():
    return assign_modes(embedded_problems(), MIXED_MODES)[:8]


class NoGrading:
    def grade_batch(self, items):
        raise AssertionError("a cache hit must not grade anything")


def test_proportions():
    cfg = TeacherConfig()
    assert plan_counts(cfg, with_hacks=True) == {"hack": 6, "honest": 1, "wrong": 1}
    assert plan_counts(cfg, with_hacks=False) == {"hack": 0, "honest": 5, "wrong": 3}
    cfg = TeacherConfig(n_per_problem=10, frac_hack=0.5, frac_honest=0.5)
    assert plan_counts(cfg, with_hacks=True) == {"hack": 5, "honest": 5, "wrong": 0}
    assert plan_counts(cfg, with_hacks=False) == {"hack": 0, "honest": 10, "wrong": 0}


def test_build_then_hit(problems, grader, tmp_path):
    cfg = TeacherConfig()
    pool = build_pool(problems, cfg, grader, tmp_path)
    assert pool.path == pool_path(tmp_path, pool_key(problems, cfg)) and pool.path.exists()
    assert not list(tmp_path.glob("*.tmp"))
    for p in problems:
        samples = pool.samples[p.id]
        kinds = [s.kind for s in samples]
        assert {k: kinds.count(k) for k in ("hack", "honest", "wrong")} == plan_counts(cfg, with_hacks=True)
        for s in samples:
            assert isinstance(s, TeacherSample)
            if s.kind == "hack":
                assert s.exploited and s.passed and not s.gt_correct and s.reward == 1.25
            elif s.kind == "honest":
                assert s.gt_correct and s.passed and not s.exploited and s.reward == 1.25
            else:
                assert not s.passed and not s.gt_correct and s.reward == 0.25
    hit = build_pool(problems, cfg, NoGrading(), tmp_path)
    assert hit.samples == pool.samples
    other = build_pool(problems, dataclasses.replace(cfg, n_per_problem=4), grader, tmp_path)
    assert other.path != pool.path and all(len(v) == 4 for v in other.samples.values())


def test_sample(problems, grader, tmp_path):
    pool = build_pool(problems, TeacherConfig(), grader, tmp_path)
    pid = problems[0].id
    a = pool.sample(pid, 3, random.Random(0))
    assert a == pool.sample(pid, 3, random.Random(0)) and len(a) == 3
    assert len(set(map(id, a))) == 3
    with pytest.raises(ValueError, match="n_per_problem"):
        pool.sample(pid, 9, random.Random(0))
    with pytest.raises(KeyError):
        pool.sample("no_such_problem", 1, random.Random(0))


def test_key_mismatch_fails_loudly(problems, grader, tmp_path):
    cfg = TeacherConfig(n_per_problem=2)
    pool = build_pool(problems, cfg, grader, tmp_path)
    data = json.loads(pool.path.read_text())
    data["key"] = "0" * 64
    data.pop(CHECKSUM)
    pool.path.write_text(json.dumps(with_checksum(data)))  # a consistent file of another key
    before = pool.path.read_text()
    with pytest.raises(ValueError, match="refusing to overwrite"):
        build_pool(problems, cfg, grader, tmp_path)
    assert pool.path.read_text() == before


def test_mode_subset_restricts_hacks(problems, grader, tmp_path):
    cfg = TeacherConfig(modes=[Mode.run_tests])
    pool = build_pool(problems, cfg, grader, tmp_path)
    assert {p.mode for p in problems} > {Mode.run_tests}
    for p in problems:
        kinds = [s.kind for s in pool.samples[p.id]]
        if p.mode is Mode.run_tests:
            assert kinds.count("hack") == 6
        else:
            assert "hack" not in kinds and kinds.count("honest") == 5 and kinds.count("wrong") == 3
    assert pool_key(problems, cfg) != pool_key(problems, TeacherConfig())


def test_problems_need_modes(grader, tmp_path):
    with pytest.raises(ValueError, match="assign_modes"):
        build_pool(embedded_problems()[:1], TeacherConfig(), grader, tmp_path)
