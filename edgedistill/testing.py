"""Tiny real components for tests, benchmarks and examples, built here with no download.

Tests and benchmarks build their models from configs (2-4 layers, 64-256 dims) and need a real
tokenizer for them: `train_bert_wordpiece` trains an uncased BERT WordPiece vocabulary on the
sentences given, with the [CLS]/[SEP] template a BERT checkpoint ships.
"""

from __future__ import annotations

from collections.abc import Iterable


def train_bert_wordpiece(sentences: Iterable[str], vocab_size: int, model_max_length: int = 128):
    """A ``BertTokenizerFast`` (uncased WordPiece, BERT specials and template) trained on ``sentences``."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], min_frequency=1
    )
    tok.train_from_iterator(sentences, trainer=trainer)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return BertTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=model_max_length,
    )
