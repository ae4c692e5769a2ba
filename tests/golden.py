"""Behaviour fingerprint of the train loop: per arm, sha256 of the metrics.jsonl rows (timing columns sec_* removed)
and of the deployment eval (deploy_eval.jsonl, summary.json without wall_seconds and config).

Run before and after a refactor; the hashes must be identical (same seed, same machine):
    python -m tests.golden --steps 20 --out before.json          # on the old tree
    python -m tests.golden --steps 20 --out after.json --compare before.json
    python -m tests.golden --steps 3 --arms erase_real route2_grad --write-rows tests/golden_rows.json
rewrites the rows tests/test_golden.py compares against (only when behaviour changes ON PURPOSE; say why in the
commit). Each arm is `train.py smoke=quick trainer.steps=N <overrides>` (smoke=quick mixes 1 teacher sample into each group
of 4, so every arm exercises the teacher pool). The cache dir is fresh per invocation unless --cache is given, so
v_hack extraction and the teacher pool are rebuilt by the code under test.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

ARMS = {
    "none": ["projection=none"],
    "erase_real": ["arm=erase_real"],
    "erase_random": ["arm=erase_random"],
    "route": ["arm=route_real"],  # projection.space=update, route's default
    "route2_grad": ["arm=route2_grad"],
    "route2_act": ["arm=route2_act"],
    # the paths the arms above leave out: mu > 1 (old log-probs), the KL term, the v_hack/mask refresh
    "erase_mu2_kl_refresh": ["arm=erase_real", "trainer.updates_per_batch=2", "trainer.beta=0.01",
                             "vhack.refresh_every=5"],
    "route2_act_refresh": ["arm=route2_act", "vhack.refresh_every=5"],
}  # fmt: skip


def comparable_rows(metrics_jsonl: Path) -> list[dict]:
    """metrics.jsonl rows without the wall-clock columns (sec_*), the only part allowed to differ between runs."""
    rows = [json.loads(x) for x in metrics_jsonl.read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith("sec_")} for r in rows]


def rows_sha256(rows) -> str:
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()


def run_outputs(run_dir: Path) -> dict:
    """The seeded outputs of a run: metrics rows, deployment evals and the summary, all wall-clock parts removed
    (config holds the cache path, which differs per invocation)."""
    summary = json.loads((run_dir / "summary.json").read_text())
    return {
        "metrics": comparable_rows(run_dir / "metrics.jsonl"),
        "deploy_eval": [json.loads(x) for x in (run_dir / "deploy_eval.jsonl").read_text().splitlines()],
        "summary": {k: v for k, v in summary.items() if k not in ("wall_seconds", "config")},
    }


def run_arm(run_dir: Path, steps: int, overrides: list[str], cache: Path, extra: list[str] = ()) -> dict:
    env = dict(os.environ, PROJECTED_GRPO_CACHE=str(cache), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    cmd = [sys.executable, "train.py", "smoke=quick", f"trainer.steps={steps}", f"hydra.run.dir={run_dir}",
           *extra, *overrides]  # fmt: skip
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {r.returncode}:\n{r.stderr[-3000:]}")
    return run_outputs(run_dir)


def max_rel_diff(a, b, path="") -> tuple[float, list[str]]:
    """(largest |a - b| / max(|a|, |b|, 1e-6) over the floats, paths of the non-float values that differ)."""
    if isinstance(a, float) and isinstance(b, float):
        if a == b or (math.isnan(a) and math.isnan(b)):
            return 0.0, []
        return abs(a - b) / max(abs(a), abs(b), 1e-6), []
    if isinstance(a, dict) and isinstance(b, dict) and set(a) == set(b):
        parts = [max_rel_diff(a[k], b[k], f"{path}/{k}") for k in sorted(a)]
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        parts = [max_rel_diff(x, y, f"{path}[{i}]") for i, (x, y) in enumerate(zip(a, b))]
    else:
        return 0.0, [] if a == b and type(a) is type(b) else [path]
    return max([0.0] + [m for m, _ in parts]), [p for _, ps in parts for p in ps]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--arms", nargs="*", default=list(ARMS), choices=list(ARMS))
    ap.add_argument("--out", type=Path, help="json file: {arm/part: sha256}")
    ap.add_argument("--write-rows", type=Path, help="json file: the outputs themselves (tests/golden_rows.json)")
    ap.add_argument("--compare", type=Path, help="a previous --out file; exit 1 on any differing arm")
    ap.add_argument("--cache", type=Path, help="cache dir (default: a fresh temporary one)")
    ap.add_argument("--tolerance", nargs=2, type=Path, metavar=("ROWS_A", "ROWS_B"),
                    help="two --write-rows files: per arm and part, the largest relative float difference and the "
                         "non-float values that differ; nothing is run")  # fmt: skip
    ap.add_argument("--extra", nargs="*", default=[], help="overrides added to every arm (e.g. trainer.folded_forward=false)")
    a = ap.parse_args()
    if a.tolerance:
        ra, rb = (json.loads(f.read_text())["arms"] for f in a.tolerance)
        for arm in sorted(set(ra) & set(rb)):
            for part in ra[arm]:
                m, other = max_rel_diff(ra[arm][part], rb[arm][part])
                print(f"{arm + '/' + part:34s} max rel diff {m:.2e}  non-float diffs {len(other)} {other[:3]}")
        return
    if not (a.out or a.write_rows):
        ap.error("give --out and/or --write-rows")
    hashes, outputs = {}, {}
    with tempfile.TemporaryDirectory(prefix="pg_golden_") as tmp:
        cache = a.cache or Path(tmp) / "cache"
        for arm in a.arms:
            out = outputs[arm] = run_arm(Path(tmp) / arm, a.steps, ARMS[arm], cache, a.extra)
            for part, x in out.items():
                hashes[f"{arm}/{part}"] = rows_sha256(x)
                print(f"{arm + '/' + part:34s} {hashes[f'{arm}/{part}']}", flush=True)
    if a.write_rows:
        a.write_rows.write_text(json.dumps({"steps": a.steps, "arms": outputs}, indent=1, sort_keys=True) + "\n")
    if a.out:
        a.out.write_text(json.dumps(hashes, indent=1) + "\n")
    if a.compare:
        old = json.loads(a.compare.read_text())
        bad = [k for k in hashes if old.get(k) != hashes[k]]
        for k in hashes:
            print(f"{k:34s} {'same' if k not in bad else 'DIFFERENT'}  {old.get(k, '-')[:16]} -> {hashes[k][:16]}")
        sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
