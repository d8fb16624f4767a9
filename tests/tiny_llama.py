"""Tiny decoder fixtures (Llama / Qwen2, 2 layers x 64) and text samples for export tests.

Tokenizers are trained here with `tokenizers` (nothing is downloaded): a GPT-2 style ByteLevel
BPE for the decoders and a WordPiece vocabulary that covers the sample sentences, so tokenizer
parity checks exercise real sub-word splits instead of mostly [UNK].
"""

from __future__ import annotations

import json
from pathlib import Path

# Varied English: casing, punctuation, numbers, contractions, accents, symbols, extra spaces.
SAMPLE_SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello, world! How are you today?",
    "I can't believe it's already 2024 — time flies.",
    "She paid $19.99 for 3 books and 2 pens.",
    "The meeting is at 10:30 a.m. on Monday, March 4th.",
    "Don't stop; keep going until you reach the end.",
    "Café owners in Zürich serve crème brûlée.",
    "Naïve résumé writers rarely get a second interview.",
    "E-mail me at someone@example.com before 5 p.m.",
    "Is 3.14159 close enough to pi? Probably!",
    "UPPERCASE WORDS ARE SHOUTING, lowercase words are calm.",
    "MixedCase identifiers like getHTTPResponse are common in code.",
    'She said, "This is the best movie of the year."',
    "Prices rose by 12% in Q3 (compared with 8% in Q2).",
    "Wait... what happened here?!",
    "The 1990s brought the web; the 2000s brought smartphones.",
    "Temperatures dropped to -5 degrees overnight.",
    "Go to https://example.org/path?query=1 for details.",
    "It's a well-known fact that state-of-the-art models are large.",
    "Their new album sold 1,000,000 copies in a week.",
    "A dull and tedious mess, honestly.",
    "The acting is superb and the story is moving.",
    "I loved every minute of it!",
    "What a boring waste of two hours...",
    "Señor García visited São Paulo and Kraków last year.",
    "He whispered: 'never again'.",
    "Numbers like 007, 42 and 3000 appear in names.",
    "Tabs\tand  double  spaces  should  be  handled.",
    "Multiple lines\nare separated by newlines.",
    "The cost was £50 or about €58 at the time.",
    "We're here, they're there, and you're everywhere.",
    "Semi-colons; colons: dashes - and underscores_are_fine.",
    "#hashtags and @mentions appear in social media posts.",
    "Ratio 3:2, score 10-7, version v2.1.0-beta.",
    "Ending without punctuation",
    "   leading and trailing spaces   ",
]

_EXTRA_CORPUS = [
    "a wonderful and moving film with a great cast",
    "the worst movie of the year, badly shot and poorly told",
    "prices, numbers, dates and times appear in many documents",
    "language models read text split into sub-word tokens",
    "quantization makes models smaller and faster on edge devices",
]


def corpus(repeat: int = 20) -> list[str]:
    return (SAMPLE_SENTENCES + _EXTRA_CORPUS) * repeat


def train_bytelevel_bpe(folder: Path, vocab_size: int = 600, split_regex: str | None = None):
    """A ByteLevel BPE (no prefix space, <s> prepended) saved as a fast tokenizer.

    Without ``split_regex`` the pre-tokenizer is GPT-2's (ByteLevel with its built-in regex); with
    one it is Llama-3 / Qwen2 style: a Split on that regex, then ByteLevel without a regex.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    if split_regex is None:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(split_regex), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=1,
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    bos_id = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B:1", special_tokens=[("<s>", bos_id)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", model_max_length=128
    )
    fast.save_pretrained(folder)
    return fast


def train_rich_wordpiece(folder: Path, vocab_size: int = 700):
    """An uncased BERT WordPiece vocabulary trained on the sample sentences themselves."""
    from edgedistill.testing import train_bert_wordpiece

    fast = train_bert_wordpiece(corpus(), vocab_size=vocab_size, model_max_length=128)
    fast.save_pretrained(folder)
    return fast


def tiny_decoder_config(vocab_size: int, **extra) -> dict:
    """Config keywords of the tiny decoders (2 layers x 64, GQA 4/2 heads) for Llama/Qwen2/Gemma
    configs; ``extra`` adds or overrides keywords."""
    base = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        rms_norm_eps=1e-6,
    )
    return {**base, **extra}


def save_tiny_decoder(
    folder: Path, arch: str = "llama", seed: int = 0, tokenizer_dir: Path | None = None, train_steps: int = 60
) -> Path:
    """Save a tiny LlamaForCausalLM / Qwen2ForCausalLM (2 layers x 64, GQA 4/2 heads) with safetensors.

    The model is trained for ``train_steps`` full-batch steps on the sample corpus so that its
    next-token distributions are peaked like a real LM's: on random weights top-1 is decided by
    near-ties and says nothing about quantization quality.
    """
    import torch
    from transformers import AutoTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    if tokenizer_dir is None:
        tok = train_bytelevel_bpe(folder)
    else:
        AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(folder)
        # Load it back the way the exporter will: transformers 5 picks the tokenizer class from
        # config.json's model_type (a qwen2 folder gets Qwen2Tokenizer, which adds <|endoftext|>),
        # so the embedding rows must count the tokens of that class.
        (folder / "config.json").write_text(json.dumps({"model_type": arch}), encoding="utf-8")
        tok = AutoTokenizer.from_pretrained(folder)
    common = tiny_decoder_config(
        len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id
    )
    torch.manual_seed(seed)
    if arch == "llama":
        from transformers import LlamaConfig, LlamaForCausalLM

        model = LlamaForCausalLM(LlamaConfig(**common, tie_word_embeddings=False))
    elif arch == "qwen2":
        from transformers import Qwen2Config, Qwen2ForCausalLM

        model = Qwen2ForCausalLM(Qwen2Config(**common, tie_word_embeddings=True))
        with torch.no_grad():  # random, non-zero q/k/v biases so the bias path is exercised
            for layer in model.model.layers:
                for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                    proj.bias.normal_(0.0, 0.2)
    else:
        raise ValueError(arch)
    if train_steps:
        batch = tok(
            SAMPLE_SENTENCES + _EXTRA_CORPUS, padding=True, return_tensors="pt", return_token_type_ids=False
        )
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        threads = torch.get_num_threads()
        # One thread: on a busy 2-core machine OpenMP spin-waits made each step ~20x slower.
        torch.set_num_threads(1)
        try:
            model.train()
            for _ in range(train_steps):
                model(**batch, labels=labels).loss.backward()
                optimizer.step()
                optimizer.zero_grad()
            model.eval()
        finally:
            torch.set_num_threads(threads)
    model.save_pretrained(folder, safe_serialization=True)
    return folder


def save_tiny_bert(folder: Path, tokenizer_dir: Path, seed: int = 2) -> Path:
    """A tiny BertModel (2 layers x 64) over the tokenizer in ``tokenizer_dir``."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tok),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=256,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def pairs_data(tmp_path: Path, lm_data: dict[str, Path], max_length: int) -> dict:
    """The recipe's ``data`` section for the prompt/response pairs of the ``lm_data`` fixture."""
    return {
        "train": str(lm_data["pairs_train"]),
        "eval": str(lm_data["pairs_eval"]),
        "prompt_column": "prompt",
        "response_column": "response",
        "max_length": max_length,
        "cache_dir": str(tmp_path / "cache"),
    }


def lm_recipe(tmp_path: Path, lm_teacher: Path, lm_data: dict[str, Path], **sections):
    """A 4-step causal-lm distillation of a 1-layer student on the plain-text data; ``sections``
    add to (dict) or replace (anything else) the recipe's sections."""
    from edgedistill.compress.config import DistillRecipe

    recipe = {
        "task": "causal-lm",
        "teacher": {"path": str(lm_teacher)},
        "student": {"layers": 1},
        "data": {
            "train": str(lm_data["train"]),
            "eval": str(lm_data["eval"]),
            "text_column": "text",
            "max_length": 48,
            "cache_dir": str(tmp_path / "cache"),
        },
        "training": {"max_steps": 4, "batch_size": 8, "lr": 1e-3, "warmup_ratio": 0.0},
    }
    for name, value in sections.items():
        recipe[name] = {**recipe[name], **value} if isinstance(value, dict) and name in recipe else value
    return DistillRecipe.model_validate(recipe)
