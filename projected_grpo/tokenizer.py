"""The embedded model's tokenizer: a byte-level BPE the project trains itself, offline and deterministically,
on its own problem/solution text, cached on disk by a hash of (corpus, vocab size)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from projected_grpo.atomic import atomic_path

PAD, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = [PAD, IM_START, IM_END]
# ChatML, as Qwen uses; eos is <|im_end|>.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tokenizer_corpus() -> list[str]:
    """Every prompt and completion text the project can produce on its embedded problems."""
    from projected_grpo.env import completions
    from projected_grpo.env.problems import embedded_problems
    from projected_grpo.env.prompts import render_prompt
    from projected_grpo.modes import ALL_MODES

    texts = []
    for p in embedded_problems():
        for mode in ALL_MODES:  # the loophole modes only: the corpus (and every cached tokenizer) predates hidden_tests
            texts += [m["content"] for m in render_prompt(p, mode)]
            texts.append(completions.hack(p, mode))
        texts += [completions.honest(p), completions.wrong(p)]
    return texts


def _train(corpus: list[str], vocab_size: int) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    return tok


def build_tokenizer(vocab_size: int, cache_dir: Path | None) -> PreTrainedTokenizerFast:
    corpus = tokenizer_corpus()
    h = hashlib.sha256(f"{vocab_size}\0".encode() + "\0".join(corpus).encode()).hexdigest()[:16]
    path = Path(cache_dir) / "tokenizer" / f"bpe{vocab_size}_{h}.json" if cache_dir is not None else None
    if path is not None and path.exists():
        tok = Tokenizer.from_file(str(path))
    else:
        tok = _train(corpus, vocab_size)
        if path is not None:
            with atomic_path(path) as tmp:
                tok.save(str(tmp))
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=IM_END, pad_token=PAD, padding_side="left")
    hf.chat_template = CHAT_TEMPLATE
    return hf
