"""The weight-delta hypothesis test: which candidate basis explains the knob delta a GRPO run learned?

score.py  R_w / R_act ratios to chance per module family, the random null (z) and the ceiling (pure tensors)
bases.py  candidate bases from the run's base model via the project's extraction (vhack/, route2/)
analyze.py  run dirs -> targets (Δ of delta_s, delta_s_hack, route2's quarantine) -> scored results, trajectory
report.py  hypotheses.md / .csv, the R_act vs R_w scatter, the v_hack trajectory plot
CLI: python -m projected_grpo.hypotheses RUN_DIR [RUN_DIR ...]   (see __main__.py)
"""
