"""Sweep report: `python -m projected_grpo.report <sweep_dir> [<sweep_dir> ...]`.

Reads every job dir under the given dirs (any dir holding status.json, summary.json or metrics.jsonl)
and writes report.md, dynamics.png and cin.png into the first dir.

- An *arm* is projection mode + v_hack source (`vanilla`, `erase_real`, `route_random`, ...) plus every
  config value that differs between the jobs (e.g. `vhack.k=5`, `heldout=fm`), the seed excepted.
  Jobs with different configs are therefore never averaged together.
- Mean ± sample std (ddof=1) over the seeds of an arm; n = number of jobs.
- Paired deltas: for each seed, arm minus the SAME-SEED vanilla job of the same context (the config
  minus projection.* and vhack.* knobs other than vhack.modes, which change nothing in vanilla training).
  Only seeds present in both are used; rows whose seed set differs from vanilla's are flagged.
  Each Δ comes with a percentile bootstrap 95% interval over the matched seeds (BOOTSTRAP resamples of the
  seeds, fixed RNG), the count of seeds with Δ < 0, and "≈noise" where |Δ| is under two binomial standard
  errors of ONE step's student sample (sqrt(p(1-p)/students_per_step), p = vanilla's mean).
- "bases": how many distinct control bases an arm's mean covers (random/shuffled v_hack and route2's A_q are
  seeded by vhack.seed, which follows trainer.seed; real and nonhack are one extraction).
- Deployment eval: held-out and train prompts (balanced per mode), pooled over the arm's seeds with
  Wilson 95% intervals and n = graded samples; a missing split says why.
- With a no_loophole arm (reward_mode=none): every arm's deployment Δhack and Δsolve against the same-seed
  baseline with Student-t 95% intervals, and whether it meets the success criterion (report/interventions.py).
- Failed jobs (with their error) and unfinished ones (running, or no summary.json) are listed, not dropped.

Modules: jobs (loading, arm labels), stats (paired deltas, bootstrap, noise), tables (report.md), interventions (the
table against the no-loophole baseline), plots (figures and
build_report), __main__ (the CLI). The names below are the public API.
"""

from projected_grpo.evaluate import wilson
from projected_grpo.report.jobs import VANILLA, Job, load_jobs
from projected_grpo.report.plots import build_report, rolling_mean
from projected_grpo.report.stats import bootstrap_ci, paired_delta
from projected_grpo.report.tables import MISSING_CELL, render

__all__ = ["MISSING_CELL", "VANILLA", "Job", "bootstrap_ci", "build_report", "load_jobs", "paired_delta", "render",
           "rolling_mean", "wilson"]  # fmt: skip
