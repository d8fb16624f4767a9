"""Tiny real components for tests, benchmarks and examples, built here with no download.

Tests and benchmarks build their models from configs (2-4 layers, 64-256 dims) and need a real
tokenizer for them: `train_bert_wordpiece` trains an uncased BERT WordPiece vocabulary on the
sentences given, with the [CLS]/[SEP] template a BERT checkpoint ships.
"""

from __future__ import annotations

from collections.abc import Iterable

BERT_SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def train_bert_wordpiece(sentences: Iterable[str], vocab_size: int, model_max_length: int = 128):
    """A ``BertTokenizerFast`` (uncased WordPiece, BERT specials and template) trained on ``sentences``.

    The same sentences give the same vocabulary and ids on every run. ``tokenizers``' trainer alone
    does not (huggingface/tokenizers#1794): it numbers the ``##``-continuation pieces in hash-map
    order, and those ids break ties between equally frequent merges, so a tiny test model's
    vocabulary, and everything trained on it, changed from run to run. Here every continuation piece
    is registered up front, sorted, so the trainer's ids and merges are fixed; the tokenizer is then
    rebuilt from the trained vocabulary with only the BERT special tokens marked special.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertTokenizerFast

    sentences = list(sentences)
    normalizer = normalizers.BertNormalizer(lowercase=True)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    continuations = sorted(
        {
            "##" + char
            for text in sentences
            for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text))
            for char in word[1:]
        }
    )
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        special_tokens=BERT_SPECIAL_TOKENS + continuations,
        min_frequency=1,
        show_progress=False,  # its bar writes blank lines to stdout, past any log redirection
    )
    trained = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    trained.normalizer = normalizer
    trained.pre_tokenizer = pre_tokenizer
    trained.train_from_iterator(sentences, trainer=trainer)

    tok = Tokenizer(models.WordPiece(vocab=trained.get_vocab(), unk_token="[UNK]"))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.WordPiece()
    tok.add_special_tokens(BERT_SPECIAL_TOKENS)
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
