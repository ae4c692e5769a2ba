"""Thin shim: `python train.py [overrides]` -> projected_grpo.train.main (Hydra, config dir conf/)."""

from projected_grpo.train import main

if __name__ == "__main__":
    main()
