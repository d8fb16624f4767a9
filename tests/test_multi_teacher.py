"""Several teachers of one student (`teachers:`, issue 26): two tiny classifiers with different
vocabularies and architectures teach one student; one teacher through `teachers:` is `teacher:`;
what cannot work is refused at once; the report has an entry per teacher."""

from __future__ import annotations

import json

import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import load_file

from conftest import NEGATIVE, POSITIVE, make_sentences, tiny_bert_config
from conftest import teachers_recipe as raw_recipe
from edgedistill.compress.config import DistillRecipe
from edgedistill.compress.distillation import distill
from edgedistill.compress.losses import LossContext, LossInputs, StudentOutputs, TeacherOutputs, build_loss
from edgedistill.compress.losses.base import EnsembleLogits
from edgedistill.compress.losses.logits import ensemble_target
from edgedistill.config import dump_config
from edgedistill.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def other_teacher(tmp_path_factory, tiny_data):
    """A second sentiment teacher of another vocabulary (its own WordPiece of 250 pieces, trained on
    other sentences) and another shape (1 layer x 48)."""
    from transformers import BertForSequenceClassification

    from edgedistill.compress.config import FinetuneRecipe
    from edgedistill.compress.finetuning import finetune
    from edgedistill.testing import train_bert_wordpiece

    corpus = [t.upper() for t, _ in make_sentences(300, seed=7)] + POSITIVE[::-1] + NEGATIVE[::-1]
    tokenizer = train_bert_wordpiece(corpus[::-1], vocab_size=250, model_max_length=128)
    base = tmp_path_factory.mktemp("other_init")
    torch.manual_seed(5)
    BertForSequenceClassification(tiny_bert_config(len(tokenizer), layers=1, hidden=48)).save_pretrained(base)
    tokenizer.save_pretrained(base)
    out = tmp_path_factory.mktemp("other_teacher")
    recipe = FinetuneRecipe.model_validate(
        {
            "model": {"path": str(base)},
            "data": {"train": str(tiny_data["train"]), "eval": str(tiny_data["eval"]), "max_length": 32},
            "training": {
                "max_steps": 40,
                "batch_size": 16,
                "lr": 3e-3,
                "save_steps": 1000,
                "warmup_ratio": 0.0,
            },
        }
    )
    report = finetune(recipe, out, progress=False)
    assert report["model"]["metrics"]["accuracy"] > 0.7, report["model"]["metrics"]
    return out / "model"


def test_two_teachers_with_different_vocabularies_teach_one_student(
    tmp_path, tiny_bert_classifier, other_teacher, tiny_data
):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    first_tok, other_tok = (
        AutoTokenizer.from_pretrained(tiny_bert_classifier),
        AutoTokenizer.from_pretrained(other_teacher),
    )
    assert first_tok.get_vocab() != other_tok.get_vocab()
    teachers = [
        {"path": str(tiny_bert_classifier), "name": "wide"},
        {"path": str(other_teacher), "name": "narrow", "weight": 2.0, "temperature": 2.0},
    ]
    out = tmp_path / "run"
    report = distill(
        DistillRecipe.model_validate(raw_recipe(teachers, tiny_data, combine="confidence")),
        out,
        progress=False,
    )

    # one cache per teacher, one row per training example, each from the teacher's own tokens
    entries = {t["name"]: t for t in report["teachers"]}
    assert list(entries) == ["wide", "narrow"]
    other_logits = torch.from_numpy(load_file_npy(entries["narrow"]["cache"]))
    assert other_logits.shape == (256, 2)
    row = 17
    text = tiny_data["train"].read_text(encoding="utf-8").splitlines()[1 + row].split("\t")[0]
    model = AutoModelForSequenceClassification.from_pretrained(other_teacher).eval()
    with torch.no_grad():
        expected = model(**other_tok(text, return_tensors="pt")).logits[0]
    assert torch.allclose(other_logits[row], expected, atol=1e-4), (other_logits[row], expected)

    # the report: an entry per teacher, the ensemble's own accuracy, the student's agreements
    for name, entry in entries.items():
        assert entry["parameters"] > 0 and entry["gguf"] is None and 0.5 < entry["metrics"]["accuracy"] <= 1
        assert 0.0 <= entry["student_agreement"] <= 1.0
        assert entry["student_agreement"] == report["student"]["metrics"]["agreement_with_teachers"][name]
    assert entries["narrow"]["weight"] == 2.0 and entries["narrow"]["temperature"] == 2.0
    assert entries["wide"]["layers"] == 2 and entries["narrow"]["layers"] == 1
    assert report["ensemble"]["combine"] == "confidence"
    assert 0.5 < report["ensemble"]["metrics"]["accuracy"] <= 1.0
    assert report["teacher"]["path"] == str(tiny_bert_classifier)  # the student's origin
    assert report["training"]["teacher_cache_bytes"] == 2 * 256 * 2 * 4
    # the student is the first teacher's: its layer, its tokenizer
    assert AutoTokenizer.from_pretrained(out / "student").get_vocab() == first_tok.get_vocab()
    meta = json.loads((out / "student" / "edgedistill.json").read_text())
    assert meta["teachers"] == [str(tiny_bert_classifier), str(other_teacher)]
    assert report["config"]["teachers"][1]["weight"] == 2.0 and "teacher" not in report["config"]


def load_file_npy(folder: str):
    import numpy as np

    return np.load(f"{folder}/logits.npy")


def test_one_teacher_in_teachers_is_the_single_teacher(tmp_path, tiny_bert_classifier, tiny_data):
    """The same loss at every step and the same student: `teachers: [{path, weight: 1}]` is `teacher:`."""
    single = raw_recipe(None, tiny_data, teacher={"path": str(tiny_bert_classifier)})
    del single["teachers"]
    single["training"] = {
        **single["training"],
        "cache_teacher_outputs": True,
        "max_steps": 4,
        "logging_steps": 1,
    }
    listed = {**single, "teachers": [{"path": str(tiny_bert_classifier), "weight": 1.0}]}
    del listed["teacher"]
    one = distill(DistillRecipe.model_validate(single), tmp_path / "one", progress=False)
    many = distill(DistillRecipe.model_validate(listed), tmp_path / "many", progress=False)
    losses = [[h["loss/soft_kl"] for h in r["history"] if "loss/soft_kl" in h] for r in (one, many)]
    assert len(losses[0]) == 4 and losses[0] == pytest.approx(losses[1], rel=1e-5, abs=1e-7)
    a, b = (load_file(tmp_path / name / "student" / "model.safetensors") for name in ("one", "many"))
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    assert "teachers" not in one and [t["name"] for t in many["teachers"]] == ["teacher0"]


def _soft_kl(teacher: TeacherOutputs, student_logits: torch.Tensor, temperature: float) -> float:
    ctx = LossContext(1, 1, 8, 8, 1, 1)
    from edgedistill.compress.config import LossSpec

    loss = build_loss(LossSpec(name="soft_kl"), ctx)
    student = StudentOutputs(student_logits, None, None, None)
    return float(loss(LossInputs(student, teacher, torch.ones(4, 3), None, temperature)))


def test_soft_kl_of_one_teacher_of_weight_one_equals_the_single_teacher_loss():
    torch.manual_seed(0)
    student, teacher = torch.randn(4, 3) * 3, torch.randn(4, 3) * 6
    for temperature in (1.0, 2.5, 4.0):
        single = _soft_kl(TeacherOutputs(logits=teacher), student, temperature)
        for weight in (1.0, 3.0):
            ensemble = EnsembleLogits(teacher[None], [weight], [None])
            listed = _soft_kl(TeacherOutputs(logits=teacher, ensemble=ensemble), student, temperature)
            assert listed == pytest.approx(single, rel=1e-5)
    # a teacher's own temperature softens its distribution only: not the student's, not the T^2
    own = EnsembleLogits(teacher[None], [1.0], [2.0])
    got = _soft_kl(TeacherOutputs(logits=teacher, ensemble=own), student, 4.0)
    target = torch.softmax(teacher / 2.0, -1)
    expected = (target * (target.log() - torch.log_softmax(student / 4.0, -1))).sum(-1).mean() * 16
    assert got == pytest.approx(float(expected), rel=1e-5)


def test_combination_mixes_probabilities_and_confidence_favours_the_sure_teacher():
    sure = torch.tensor([[8.0, -8.0]])  # almost one-hot
    unsure = torch.tensor([[0.0, 0.0]])  # uniform: confidence 0
    big_scale = torch.tensor([[-40.0, 40.0]])
    mean = ensemble_target(EnsembleLogits(torch.stack([sure, big_scale]), [1.0, 1.0], [1.0, 1.0]), 1.0)
    # a mean of logits would follow the larger scale entirely; the mixture of probabilities is 50/50
    assert mean[0].tolist() == pytest.approx([0.5, 0.5], abs=1e-6)
    weighted = ensemble_target(EnsembleLogits(torch.stack([sure, unsure]), [1.0, 3.0], [1.0, 1.0]), 1.0)
    assert float(weighted[0, 0]) == pytest.approx(
        0.25 * float(torch.softmax(sure, -1)[0, 0]) + 0.375, rel=1e-6
    )
    confident = ensemble_target(
        EnsembleLogits(torch.stack([sure, unsure]), [1.0, 3.0], [1.0, 1.0], "confidence"), 1.0
    )
    assert float(confident[0, 0]) == pytest.approx(float(torch.softmax(sure, -1)[0, 0]), rel=1e-5)
    # every teacher uniform: the recipe's weights decide
    flat = ensemble_target(
        EnsembleLogits(torch.stack([unsure, unsure]), [1.0, 3.0], [1.0, 1.0], "confidence"), 1.0
    )
    assert flat[0].tolist() == pytest.approx([0.5, 0.5])


def test_a_teacher_of_weight_zero_teaches_nothing_and_only_gives_the_student_its_shape(tiny_data):
    """`teachers: [{small, weight: 0}, {big}]`: the student is cut from the small teacher and learns
    from the big one alone (a MiniLM-shaped student of an MPNet teacher)."""
    shape_only = torch.tensor([[9.0, -9.0]])
    teacher = torch.tensor([[-1.0, 2.0]])
    for combine in ("mean", "confidence"):
        mixed = ensemble_target(
            EnsembleLogits(torch.stack([shape_only, teacher]), [0.0, 1.0], [None, None], combine), 2.0
        )
        assert mixed[0].tolist() == pytest.approx(torch.softmax(teacher / 2.0, -1)[0].tolist(), rel=1e-6)
    recipe = DistillRecipe.model_validate(raw_recipe([{"path": "a", "weight": 0}, {"path": "b"}], tiny_data))
    assert recipe.teacher.path == "a" and [t.weight for t in recipe.teachers] == [0.0, 1.0]
    with pytest.raises(ValidationError, match="every logits teacher has weight 0"):
        DistillRecipe.model_validate(
            raw_recipe([{"path": "a", "weight": 0}, {"path": "b", "weight": 0}], tiny_data)
        )
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        DistillRecipe.model_validate(raw_recipe([{"path": "a", "weight": -1}], tiny_data))


def test_recipe_refuses_what_several_teachers_cannot_do_all_at_once(tiny_data):
    raw = raw_recipe(
        [{"path": "a", "name": "x"}, {"path": "b", "name": "x", "output": "embedding"}],
        tiny_data,
        losses=[{"name": "soft_kl"}, {"name": "hidden_mse"}],
    )
    with pytest.raises(ValidationError) as err:
        DistillRecipe.model_validate(raw)
    text = str(err.value)
    # an embedding output is the generalist's (tests/test_generalist.py): here no loss reads it
    assert "teachers[1] teaches output 'embedding' but no loss reads it" in text
    assert "['hidden_mse']" in text and "given twice" in text

    for bad, words in (
        ({**raw_recipe([{"path": "a"}], tiny_data), "teacher": {"path": "a"}}, "exactly one"),
        ({k: v for k, v in raw_recipe(None, tiny_data).items() if k != "teachers"}, "exactly one"),
        ({**raw_recipe([{"path": "a"}], tiny_data), "task": "causal-lm"}, "token alignment"),
        (
            {
                **raw_recipe([{"path": "a"}], tiny_data),
                "task": "feature-extraction",
                "losses": [{"name": "embedding_mse"}],
            },
            "embedding space",
        ),
        ({**raw_recipe([], tiny_data)}, "at least one"),
    ):
        with pytest.raises(ValidationError, match=words):
            DistillRecipe.model_validate(bad)
    single = {k: v for k, v in raw_recipe(None, tiny_data).items() if k != "teachers"}
    with pytest.raises(ValidationError, match="combine"):
        DistillRecipe.model_validate({**single, "teacher": {"path": "a"}, "combine": "confidence"})


def test_dumps_validate_again_and_one_teacher_dumps_are_unchanged(tiny_data):
    listed = DistillRecipe.model_validate(raw_recipe([{"path": "a"}, {"path": "b", "weight": 2}], tiny_data))
    assert listed.teacher.path == "a"
    again = DistillRecipe.model_validate(dump_config(listed))
    assert again == listed and "teacher" not in dump_config(listed)
    single = {k: v for k, v in raw_recipe(None, tiny_data).items() if k != "teachers"}
    dumped = dump_config(DistillRecipe.model_validate({**single, "teacher": {"path": "a"}}))
    assert "teachers" not in dumped and "combine" not in dumped and dumped["teacher"]["path"] == "a"


def test_teachers_of_other_labels_or_missing_are_refused_before_the_run(
    tmp_path, tiny_bert_classifier, tiny_data
):
    from transformers import AutoTokenizer, BertForSequenceClassification

    three = tmp_path / "three_labels"
    tok = AutoTokenizer.from_pretrained(tiny_bert_classifier)
    BertForSequenceClassification(tiny_bert_config(len(tok), num_labels=3, layers=1)).save_pretrained(three)
    tok.save_pretrained(three)
    teachers = [
        {"path": str(tiny_bert_classifier)},
        {"path": str(three)},
        {"path": str(tmp_path / "nowhere")},
    ]
    out = tmp_path / "run"
    with pytest.raises(ConfigError) as err:
        distill(DistillRecipe.model_validate(raw_recipe(teachers, tiny_data)), out, progress=False)
    problems = dict(err.value.problems)
    assert "3 labels" in problems["teachers[1]"] and "2" in problems["teachers[1]"]
    assert "does not exist" in problems["teachers[2].path"]
    assert not out.exists()


def test_ensemble_reads_every_teachers_row_of_each_example(tmp_path):
    import numpy as np

    from edgedistill.compress.ensemble import Ensemble, Member
    from edgedistill.compress.teacher_cache import TeacherOutputCache
    from edgedistill.compress.teachers import TeacherEntry

    rows = np.arange(12, dtype=np.float32).reshape(6, 2)
    members = [
        Member(
            entry=TeacherEntry(path=f"t{k}", weight=k + 1.0, temperature=None if k == 0 else 3.0),
            name=f"t{k}",
            cache=TeacherOutputCache({"logits": rows * (k + 1)}, tmp_path),
            eval_outputs=torch.tensor([[1.0, 0.0], [0.0, 1.0]]) * (1 if k == 0 else -3),
            metrics={},
            parameters=1,
            layers=1,
            provenance=None,
        )
        for k in range(2)
    ]
    ensemble = Ensemble(members, "mean", torch.tensor([0, 0]))
    got = ensemble.lookup(torch.tensor([4, 1]), torch.device("cpu"))
    assert torch.equal(got.logits, torch.tensor([[8.0, 9.0], [2.0, 3.0]]))
    assert torch.equal(got.ensemble.logits[1], torch.tensor([[16.0, 18.0], [4.0, 6.0]]))
    assert got.ensemble.weights == [1.0, 2.0] and got.ensemble.temperatures == [None, 3.0]
    # the second teacher (weight 2) outvotes the first on both rows, its logits softened at its T=3
    assert ensemble.eval_predictions().tolist() == [1, 0]
    agreement = ensemble.student_agreement(torch.tensor([[0.0, 1.0], [0.0, 1.0]]))
    assert agreement == {"agreement_with_teachers": {"t0": 0.5, "t1": 0.5}, "agreement_with_ensemble": 0.5}
    assert ensemble.report(agreement)["ensemble"]["metrics"] == {"examples": 2, "accuracy": 0.5}
