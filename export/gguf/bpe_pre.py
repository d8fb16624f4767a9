"""Which ``tokenizer.ggml.pre`` a byte-level BPE student's GGUF file names: the regexes llama.cpp
splits text with before BPE.

In order: the GGUF teacher's own value when the student was distilled from a GGUF file with the
same vocabulary (`edgedistill.json`'s ``teacher``); else the name llama.cpp's
``convert_hf_to_gguf.py`` gives the tokenizer, found the way that script finds it (the sha256 of
``str(tokenizer.encode(CHECK_TEXT))``, looked up among known tokenizers); else the shape of the
tokenizer.json pre-tokenizer (`tokenizer._bpe_pre_name`). A SmolLM2 student needs the first two:
transformers rebuilds a GGUF file's tokenizer as a bare ByteLevel pre-tokenizer (the GPT-2 regex,
"gpt-2" by shape) where the teacher file and llama.cpp's convert script say "smollm" (digits split
one by one first).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# The fixed text llama.cpp's convert_hf_to_gguf.py encodes to identify a BPE pre-tokenizer
# (whitespace runs, emoji sequences, digit runs, Khmer, Chinese, Cyrillic, quotes, contractions).
CHECK_TEXT = (
    "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n\U0001f680 (normal) \U0001f636\u200d\U0001f32b\ufe0f "
    "(multiple emojis concatenated) \u2705 \U0001f999\U0001f999 3 33 333 3333 33333 333333 3333333 "
    "33333333 3.3 3..3 3...3 \u1780\u17b6\u1793\u17cb\u178f\u17c2\u1796\u17b7\u179f\u17c1\u179f\u17a2\u17b6"
    "\u1785\U0001f601 ?\u6211\u60f3\u5728apple\u5de5\u4f5c1314151\u5929\uff5e ------======= "
    "\u043d\u0435\u0449\u043e \u043d\u0430 \u0411\u044a\u043b\u0433\u0430\u0440\u0441\u043a\u0438 "
    "''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you sure? 'M not sure I'll "
    "make it, 'D you like some tea? We'Ve a'lL"
)

# sha256 of str(tokenizer.encode(CHECK_TEXT)) -> tokenizer.ggml.pre, as convert_hf_to_gguf.py has
# them, for the pre-tokenizers the exporter supports (each name is one llama.cpp knows).
KNOWN_CHECK_HASHES = {
    "855059429035d75a914d1eda9f10a876752e281a054a7a3d421ef0533e5b6249": "smollm",  # SmolLM, SmolLM2
    "3ce83efda5659b07b1ad37ca97ca5797ea4285d9b9ab0dc679e4a720c9da7454": "gpt-2",  # openai-community/gpt2
    "0ef9807a4087ebef797fc749390439009c3b9eda9ad1a097abbe738f486c01e5": "llama-bpe",  # Meta-Llama-3-8B
    "e636dc30a262dcc0d8c323492e32ae2b70728f4df7dfe9737d9f920a282b8aea": "qwen2",  # Qwen1.5-7B
    "d4540891389ea895b53b399da6ac824becc30f2fba0e9ddbb98f92e55ca0e97c": "qwen2",  # Qwen3-Embedding-0.6B
}


def check_hash(tokenizer: Any) -> str:
    """The hash convert_hf_to_gguf.py identifies a tokenizer by (special tokens added, as it does)."""
    return hashlib.sha256(str(tokenizer.encode(CHECK_TEXT)).encode()).hexdigest()


def teacher_bpe_pre(model_dir: Path, n_vocab: int) -> tuple[str, Path] | None:
    """(tokenizer.ggml.pre, file) of the GGUF teacher the student in ``model_dir`` was distilled from,
    when that file is still there and holds a GPT-2 style vocabulary of the student's size."""
    from edgedistill.errors import EdgeDistillError
    from edgedistill.gguf_header import read_gguf_header

    meta = model_dir / "edgedistill.json"
    try:
        teacher = json.loads(meta.read_text(encoding="utf-8")).get("teacher") if meta.is_file() else None
    except (OSError, ValueError):
        return None
    if not isinstance(teacher, str) or not teacher.endswith(".gguf") or not Path(teacher).is_file():
        return None
    try:
        header = read_gguf_header(Path(teacher))
    except EdgeDistillError as exc:  # a damaged or changed teacher file: the other rules decide
        log.warning(
            "could not read the teacher's GGUF header %s (%s); not carrying its pre-tokenizer", teacher, exc
        )
        return None
    pre, model, tokens = (
        header.get(k) for k in ("tokenizer.ggml.pre", "tokenizer.ggml.model", "tokenizer.ggml.tokens")
    )
    if not isinstance(pre, str) or model != "gpt2" or getattr(tokens, "length", None) != n_vocab:
        return None
    return pre, Path(teacher)


def choose_bpe_pre(model_dir: Path, tokenizer: Any, n_vocab: int, by_shape: Any) -> tuple[str, str]:
    """(tokenizer.ggml.pre, how it was decided). ``by_shape()`` is the last resort (it raises on a
    pre-tokenizer llama.cpp has no name for)."""
    carried = teacher_bpe_pre(model_dir, n_vocab)
    if carried is not None:
        return carried[0], f"the GGUF teacher's tokenizer.ggml.pre ({carried[1].name})"
    digest = check_hash(tokenizer)
    if digest in KNOWN_CHECK_HASHES:
        return KNOWN_CHECK_HASHES[digest], f"llama.cpp convert_hf_to_gguf check hash {digest[:16]}"
    return by_shape(), "the tokenizer.json pre-tokenizer"
