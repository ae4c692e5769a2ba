"""The CPU model organism: a few-million-parameter Qwen3 the project pre-trains on its own embedded TRAIN problems.

The randomly initialised embedded model never writes parseable code, so GRPO has nothing to learn from. The organism
is trained with plain next-token loss (completion tokens only) on a supervised corpus of prompts (each with a mode
hint) followed by:

* honest completions: the canonical solution, then the check the hint describes (``self_test``: e.g. under the
  stdout hint, asserts and then the marker), so every completion depends on the hint and the model learns to read it;
* wrong completions: a plausible wrong solution with the same kind of check, which fails;
* a SMALL fraction of exploits of the hinted mode (``hack_text``: the success signal without the asserts, written
  first, so the choice to exploit is the completion's first decision).

Half of each mode's problems are never shown solved (``unsolvable_ids``): as with hard problems for a real model,
there only the exploit earns the reward. At temperature 1 the organism therefore writes a fenced block almost
always, solves a minority of problems and exploits the grader only rarely; vanilla GRPO against the flawed grader
can then raise the exploit rate.

Held-out problems never enter the corpus. The build is cached at ``<cache_dir>/organism/<key>/`` (safetensors weights,
tokenizer files, ``manifest.json``), key = hash(build config, corpus hash); it is written to a temporary directory
and renamed into place, so a reader never sees a half-written organism.

Modules: corpus (the supervised corpus), store (build config, cache key, directory, loader), pretrain (training,
load_or_build), report (step-0 behaviour), __main__ (CLI: python -m projected_grpo.organism {build|report|path}
[organism=v6] [overrides of conf/organism/<build>.yaml, e.g. train.steps=9]). The names below are the public API.
The model builder (model.py) never imports this package: setup.load_model passes load_or_build to it.
"""

from projected_grpo.env.prompts import render_prompt
from projected_grpo.organism.corpus import (
    build_corpus,
    corpus_hash,
    hack_text,
    honest_text,
    self_test,
    train_problems,
    unsolvable_ids,
    wrong_text,
)
from projected_grpo.organism.pretrain import build, load_or_build, train
from projected_grpo.organism.report import print_report, step0_report
from projected_grpo.organism.store import (
    MANIFEST,
    ORGANISM_VERSION,
    WEIGHTS,
    build_config,
    cache_key,
    compose_config,
    load,
    lookup,
    organism_dir,
)

__all__ = [
    "MANIFEST", "ORGANISM_VERSION", "WEIGHTS", "build", "build_config", "build_corpus", "cache_key", "compose_config",
    "corpus_hash", "hack_text", "honest_text", "load", "load_or_build", "lookup", "organism_dir", "print_report",
    "render_prompt", "self_test", "step0_report", "train", "train_problems", "unsolvable_ids", "wrong_text",
]  # fmt: skip
