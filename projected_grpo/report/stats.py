"""The report's statistics: per-seed values, mean ± std, paired deltas against the same-seed vanilla job with a
bootstrap interval over seeds, and the one-step binomial noise level."""

from __future__ import annotations

import math
import random
import statistics
from collections import defaultdict

from projected_grpo.report.jobs import Job

NOISE_SE = 2.0  # "≈noise": |Δ| under this many binomial SEs of one step's student sample

BOOTSTRAP = 10_000  # resamples of the seeds for the Δ intervals


def get(summary: dict, path: str):
    """summary['a']['b'] for path 'a.b'; None where absent."""
    node = summary
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def by_seed(jobs: list[Job], path: str) -> dict[int, float]:
    """Per-seed value (mean over duplicate jobs of a seed), skipping missing values."""
    vals = defaultdict(list)
    for j in jobs:
        v = get(j.summary, path)
        if v is not None and not (isinstance(v, float) and math.isnan(v)):
            vals[j.seed].append(float(v))
    return {s: statistics.fmean(v) for s, v in vals.items()}


def mean_std(values: list[float]) -> tuple[float, float, int]:
    n = len(values)
    if n == 0:
        return math.nan, math.nan, 0
    return statistics.fmean(values), (statistics.stdev(values) if n > 1 else math.nan), n


def paired_delta(row: list[Job], ref: list[Job], path: str, ref_path: str | None = None) -> tuple[float, float, int]:
    """Mean ± std over matched seeds of (row - same-seed vanilla)."""
    a, b = by_seed(row, path), by_seed(ref, ref_path or path)
    return mean_std([a[s] - b[s] for s in sorted(set(a) & set(b))])


def bootstrap_ci(values: list[float], n_boot: int = BOOTSTRAP, seed: int = 0) -> tuple[float, float] | None:
    """Percentile bootstrap 95% interval of the mean over `values` (resampled with replacement); None for n < 2."""
    n = len(values)
    if n < 2:
        return None
    rng = random.Random(seed)
    means = sorted(statistics.fmean(rng.choices(values, k=n)) for _ in range(n_boot))
    return means[int(0.025 * n_boot)], means[int(0.975 * n_boot) - 1]


def matched_deltas(row: list[Job], ref: list[Job], path: str, ref_path: str | None = None) -> dict[int, float]:
    """seed -> row minus same-seed vanilla, on the seeds both have."""
    a, b = by_seed(row, path), by_seed(ref, ref_path or path)
    return {s: a[s] - b[s] for s in sorted(set(a) & set(b))}


def step_noise(row: list[Job], ref: list[Job], ref_path: str) -> float | None:
    """Binomial SE of one step's student sample at vanilla's mean rate: sqrt(p(1-p)/students_per_step)."""
    ns = {j.summary.get("students_per_step") for j in row + ref}
    p = list(by_seed(ref, ref_path).values())
    if None in ns or len(ns) != 1 or not p:
        return None
    pm = min(max(statistics.fmean(p), 0.0), 1.0)
    return math.sqrt(pm * (1 - pm) / ns.pop())
