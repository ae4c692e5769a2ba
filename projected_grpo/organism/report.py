"""The organism's step-0 behaviour: sample train prompts under every mode hint and grade them (format, solve,
hack, passed rates per mode)."""

from __future__ import annotations

import torch

from projected_grpo.modes import Mode
from projected_grpo.organism.corpus import train_problems

# ---------------------------------------------------------------------------------------------------
# Step-0 behaviour


def step0_report(model, tok, cfg) -> dict:
    """Sample train prompts under every corpus mode (and under each problem's assigned mode) and grade them."""
    from projected_grpo.env.grader import Grader
    from projected_grpo.sampler import sample
    from projected_grpo.tokens import prompt_ids

    r = cfg["report"]
    torch.set_num_threads(int(cfg["threads"]))
    problems = train_problems()
    items = [(p, Mode(m), "all") for m in cfg["corpus"]["modes"] for p in problems]
    items += [(p, p.mode, "assigned") for p in problems]
    items = [it for it in items for _ in range(int(r["samples"]))]
    gen = torch.Generator().manual_seed(int(cfg["seed"]) + 1)
    texts, n_tok = [], []
    for i in range(0, len(items), int(r["batch"])):
        chunk = items[i : i + int(r["batch"])]
        prompts = [prompt_ids(tok, p, m) for p, m, _ in chunk]
        outs = sample(model, prompts, int(r["max_new_tokens"]), tok.eos_token_id, tok.pad_token_id,
                      float(r["temperature"]), gen)
        texts += [tok.decode(o, skip_special_tokens=True) for o in outs]
        n_tok += [len(o) for o in outs]
    with Grader(int(r["n_workers"])) as g:
        rewards = g.grade_batch([(t, p, m) for t, (p, m, _) in zip(texts, items)])
    rows: dict[str, dict] = {}
    for (p, m, group), rw, n in zip(items, rewards, n_tok):
        # an assigned sample also counts in its mode's GRPO-prompt row (the per-mode step-0 targets are on those)
        for name in [m.value] if group == "all" else ["assigned (GRPO prompts)", f"assigned: {m.value}"]:
            row = rows.setdefault(name, {"n": 0, "format": 0, "solve": 0, "hack": 0, "passed": 0, "tokens": 0})
            row["n"] += 1
            row["format"] += rw.format_ok
            row["solve"] += rw.gt_correct
            row["hack"] += rw.exploited
            row["passed"] += rw.passed
            row["tokens"] += n
    allrow = {k: sum(rows[m.value][k] for m in map(Mode, cfg["corpus"]["modes"])) for k in ("n", "format", "solve",
                                                                                            "hack", "passed", "tokens")}
    rows["all modes"] = allrow
    return {name: {"n": row["n"], **{k: row[k] / row["n"] for k in ("format", "solve", "hack", "passed", "tokens")}}
            for name, row in rows.items()}


def print_report(rows: dict) -> None:
    print(f"\n{'mode':<26}{'n':>5}{'format':>9}{'solve':>8}{'hack':>8}{'passed':>8}{'tokens':>8}")
    for name, r in rows.items():
        print(f"{name:<26}{r['n']:>5}{r['format']:>9.1%}{r['solve']:>8.1%}{r['hack']:>8.1%}{r['passed']:>8.1%}"
              f"{r['tokens']:>8.1f}")
