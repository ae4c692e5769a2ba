"""Grading throughput: the project's Grader (fork-servers, all isolation layers, one two-phase run per
completion) against a naive grader (one fresh `python -c` per completion running solution + asserts), on the same
batch, side by side.

Batches: the embedded problems' canonical solutions (`projected_grpo.env.problems.embedded_problems`), and, when
present, the canonical solutions of
../shared/data/leetcode_medhard_sample.jsonl. Prints completions/s and CPU-ms per completion for each grader; the
LAST line is one JSON object: ratio (project cps / naive cps, embedded batch), project_cps, naive_cps,
project_cpu_ms, naive_cpu_ms, plus leetcode_* figures when that file exists.

CPU is counted for everything each grader causes: this process, plus the servers and their reaped children
(/proc/<pid>/stat utime+stime+cutime+cstime) for the project, plus reaped subprocesses for the naive grader.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from projected_grpo.env.grader import Grader
from projected_grpo.env.leetcode import load_jsonl
from projected_grpo.env.problem import Problem
from projected_grpo.env.problems import embedded_problems
from projected_grpo.modes import Mode

N_WORKERS = 2
REPEAT = 4  # each embedded canonical solution is graded this many times
LEETCODE = ROOT / ".." / "shared" / "data" / "leetcode_medhard_sample.jsonl"
NAIVE_TIMEOUT_S = 10.0


def load_batches() -> dict[str, list[Problem]]:
    batches = {"embedded": embedded_problems() * REPEAT}
    if LEETCODE.exists():
        batches["leetcode"] = list(load_jsonl(LEETCODE).problems)
    else:
        print(f"{LEETCODE} absent (../shared not beside the checkout): skipping the leetcode batch", file=sys.stderr)
    return batches


def naive_program(p: Problem) -> str:
    asserts = "\n".join(f"assert {call} == {exp}" for call, exp in p.tests)
    return f"{p.setup_code}\n{p.canonical}\n{asserts}\n"


def naive_grade(p: Problem) -> bool:
    try:
        res = subprocess.run([sys.executable, "-c", naive_program(p)], capture_output=True, check=False, timeout=NAIVE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return False
    return res.returncode == 0


def _proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def bench_project(g: Grader, problems: list[Problem]) -> dict:
    items = [(f"```python\n{p.canonical}\n```", p, Mode.exit_code) for p in problems]
    for p in {p.id: p for p in problems}.values():
        g.cpu_limit(p)  # calibrate outside the timed section (done once per problem in training too)
    servers = [w.proc.pid for w in g.pool.workers]
    cpu0, self0, t0 = sum(_proc_cpu(pid) for pid in servers), time.process_time(), time.perf_counter()
    rewards = g.grade_batch(items)
    wall = time.perf_counter() - t0
    cpu = sum(_proc_cpu(pid) for pid in servers) - cpu0 + time.process_time() - self0
    return {"n": len(items), "cps": len(items) / wall, "cpu_ms": 1000 * cpu / len(items),
            "correct": sum(r.gt_correct for r in rewards), "wall_s": wall}


def bench_naive(problems: list[Problem]) -> dict:
    cpu0, self0, t0 = _children_cpu(), time.process_time(), time.perf_counter()
    with ThreadPoolExecutor(N_WORKERS) as ex:
        ok = list(ex.map(naive_grade, problems))
    wall = time.perf_counter() - t0
    cpu = _children_cpu() - cpu0 + time.process_time() - self0
    return {"n": len(problems), "cps": len(problems) / wall, "cpu_ms": 1000 * cpu / len(problems),
            "correct": sum(ok), "wall_s": wall}


def main():
    out = {}
    with Grader(n_workers=N_WORKERS) as g:
        for name, problems in load_batches().items():
            naive = bench_naive(problems)
            project = bench_project(g, problems)
            for label, r in (("project", project), ("naive", naive)):
                print(f"{name:9s} {label:8s} {r['n']:4d} completions  {r['cps']:8.1f} completions/s  "
                      f"{r['cpu_ms']:7.1f} CPU-ms/completion  {r['correct']}/{r['n']} scored correct  "
                      f"({r['wall_s']:.2f} s wall)")
            prefix = "" if name == "embedded" else f"{name}_"
            out.update({f"{prefix}ratio": round(project["cps"] / naive["cps"], 2),
                        f"{prefix}project_cps": round(project["cps"], 1), f"{prefix}naive_cps": round(naive["cps"], 1),
                        f"{prefix}project_cpu_ms": round(project["cpu_ms"], 2),
                        f"{prefix}naive_cpu_ms": round(naive["cpu_ms"], 2),
                        f"{prefix}project_correct": project["correct"], f"{prefix}naive_correct": naive["correct"],
                        f"{prefix}n": project["n"]})
    out["note"] = ("project = 1 sandboxed run per completion (phase 1 oracle, phase 2 exit_code loophole); naive = 1 unsandboxed "
                   "interpreter per completion running the asserts")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
