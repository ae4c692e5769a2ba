"""Sweep report CLI: python -m projected_grpo.report <sweep_dir> [<sweep_dir> ...] (report.md + figures into the first)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from projected_grpo.report.plots import build_report


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m projected_grpo.report", description=__doc__.splitlines()[0])
    ap.add_argument("sweep_dirs", nargs="+", type=Path, help="Hydra multirun dirs; output goes to the first")
    args = ap.parse_args(argv)
    path = build_report(args.sweep_dirs)
    print(f"report: wrote {path} (+ dynamics.png, cin.png, vanilla_seeds.png with a vanilla arm)", file=sys.stderr)


if __name__ == "__main__":
    main()
