"""Hostile data files: each refused (DataError naming the file and line) or, without --strict,
counted as bad rows in the report; memory stays bounded whatever one line holds. And finetune's
label range: refused under --strict as distill refuses labels outside its teacher's head."""

from __future__ import annotations

import json

import pytest
from _inputs_helpers import billion_laughs, bounded, cli, write  # noqa: F401  (pytest fixtures)

from edgedistill.data import DataConfig, read_examples
from edgedistill.data import readers as data_readers
from edgedistill.errors import DataError

GOOD = "".join(f"good sentence {i}\t{i % 2}\n" for i in range(6))


def _read(path, strict=False, num_labels=2, **cfg):
    config = DataConfig(train=str(path), strict=strict, label_column="label", **cfg)
    return read_examples(str(path), config, needs_labels=True, num_labels=num_labels)


def _refused(path, *expected, **kwargs):
    with pytest.raises(DataError) as info:
        _read(path, **kwargs)
    message = str(info.value)
    assert path.name in message, message
    for part in expected:
        assert part in message, message
    return message


def test_empty_file(write):
    _refused(write("empty.tsv", ""), "the file is empty", "header line")


def test_header_only(write):
    _refused(write("header.tsv", "sentence\tlabel\n"), "no data rows")


def test_empty_jsonl(write):
    _refused(write("empty.jsonl", ""), "no data rows")


def test_bad_utf8_row_strict_names_line(write):
    path = write("bad.tsv", b"sentence\tlabel\n" + GOOD.encode() + b"caf\xe9\t1\n")
    _refused(path, "row 8", "undecodable", "not UTF-8", strict=True)


def test_bad_utf8_row_counted_otherwise(write):
    path = write("bad2.tsv", b"sentence\tlabel\n" + GOOD.encode() + b"caf\xe9\t1\n")
    examples, report = _read(path)
    assert len(examples) == 6 and report.bad_rows == {"undecodable": 1}


@pytest.mark.parametrize("suffix", ["jsonl", "tsv"])
def test_huge_single_line_bounded(suffix, write, bounded, monkeypatch):
    monkeypatch.setattr(data_readers, "MAX_LINE_BYTES", 1 << 20)  # the real cap is 16 MiB
    huge = "x" * (24 << 20)
    if suffix == "jsonl":
        body = "".join(json.dumps({"sentence": f"s {i}", "label": i % 2}) + "\n" for i in range(4))
        data = body + json.dumps({"sentence": huge, "label": 0}) + "\n" + body
    else:
        data = "sentence\tlabel\n" + GOOD + huge + "\t0\n" + GOOD
    path = write(f"huge.{suffix}", data)
    del huge, data
    with bounded():
        examples, report = _read(path)
        assert report.bad_rows == {"malformed row": 1}
        assert "line longer than the limit" in report.examples[0].detail
        assert len(examples) == (8 if suffix == "jsonl" else 12)
        _refused(path, "row 5" if suffix == "jsonl" else "row 8", "line longer than the limit", strict=True)


def test_torn_jsonl_last_line(write):
    rows = "".join(json.dumps({"sentence": f"s {i}", "label": i % 2}) + "\n" for i in range(5))
    path = write("torn.jsonl", rows + '{"sentence": "half a rec')
    _refused(path, "row 6", "invalid JSON", strict=True)
    examples, report = _read(path)
    assert len(examples) == 5 and report.bad_rows == {"malformed row": 1}


def test_jsonl_unreadable_values_are_bad_rows(write):
    rows = json.dumps({"sentence": "fine", "label": 1}) + "\n"
    path = write(
        "odd.jsonl", rows + '{"sentence": "x", "label": ' + "9" * 5000 + "}\n" + "[" * 100_000 + "\n"
    )
    examples, report = _read(path)
    assert len(examples) == 1 and report.bad_rows == {"malformed row": 2}


def test_label_out_of_range_strict(write):
    _refused(
        write("range.tsv", "sentence\tlabel\n" + GOOD + "seven\t7\n"), "row 8", "7 not in 0..1", strict=True
    )


def test_negative_label_strict(write):
    _refused(write("neg.tsv", "sentence\tlabel\n" + GOOD + "minus\t-1\n"), "row 8", "negative", strict=True)


def test_non_integer_label_strict(write):
    _refused(
        write("float.tsv", "sentence\tlabel\n" + GOOD + "half\t0.5\n"),
        "row 8",
        "not an integer",
        strict=True,
    )


def test_missing_columns(write):
    _refused(write("cols.tsv", "text\ty\n" + GOOD), "column 'sentence' not found", "data.text_column")


def test_json_array_over_cap(write, monkeypatch):
    monkeypatch.setattr(data_readers, "MAX_JSON_ARRAY_BYTES", 1000)
    path = write("arr.json", json.dumps([{"sentence": f"s {i}", "label": 0} for i in range(100)]))
    _refused(path, "parsed whole", "JSON lines")


# -- finetune: the label range ------------------------------------------------------------------


def _finetune_recipe(model, train, eval_, strict, **extra):
    from edgedistill.compress.config import FinetuneRecipe

    return FinetuneRecipe.model_validate(
        {
            "model": {"path": str(model)},
            "data": {"train": str(train), "eval": str(eval_), "max_length": 16, "strict": strict},
            "training": {"max_steps": 1, "batch_size": 4, "save_steps": 1000, "logging_steps": 1},
            **extra,
        }
    )


@pytest.mark.parametrize(
    ("label", "extra", "expected"),
    [(7, {"num_labels": 2}, "7 not in 0..1"), (5000, {}, "5000 not in 0..999")],
    ids=["recipe_range", "inferred_cap"],
)
def test_finetune_strict_refuses_labels_out_of_range(
    label, extra, expected, write, tmp_path, tiny_bert_encoder
):
    from edgedistill.compress.finetuning import finetune

    train = write("ft_train.tsv", "sentence\tlabel\n" + GOOD + f"odd one\t{label}\n")
    recipe = _finetune_recipe(tiny_bert_encoder, train, train, strict=True, **extra)
    with pytest.raises(DataError) as info:
        finetune(recipe, tmp_path / "out", progress=False)
    assert "ft_train.tsv, row 8" in str(info.value) and expected in str(info.value), str(info.value)
    assert (
        not (tmp_path / "out" / "model").exists() and not (tmp_path / "out" / "finetune_report.json").exists()
    )


def test_finetune_reports_out_of_range_without_strict(write, tmp_path, tiny_bert_encoder):
    from edgedistill.compress.finetuning import finetune

    train = write("ft_train2.tsv", "sentence\tlabel\n" + GOOD + "odd one\t7\n")
    report = finetune(
        _finetune_recipe(tiny_bert_encoder, train, train, False, num_labels=2), tmp_path / "o", progress=False
    )
    assert report["data"]["train"]["bad_rows"] == {"label out of range": 1}, report["data"]["train"]
