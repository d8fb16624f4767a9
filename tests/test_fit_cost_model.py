"""The fit cost model: lines fitted to measured points, and a skip only when even the most
optimistic reading is clearly over a budget (pure arithmetic: no measurement here; the screening
that uses it is measured for real in tests/test_fit.py)."""

from __future__ import annotations

import pytest

from edgedistill.fit.cost_model import CostModel, features, fit_line
from edgedistill.fit.space import Shape

BERT = {"hidden_size": 384, "num_attention_heads": 12, "intermediate_size": 1536, "vocab_size": 30522}
LLAMA = {
    "hidden_size": 576,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "intermediate_size": 1536,
    "vocab_size": 49152,
}


def test_features_grow_with_every_dimension_of_a_shape():
    f = lambda shape: features(shape, BERT, 128, decoder=False)  # noqa: E731
    base = f(Shape(layers=(0, 2)))
    assert (
        f(Shape(layers=(0, 2, 4)))["macs"] > base["macs"]
        and f(Shape(layers=(0, 2, 4)))["params"] > base["params"]
    )
    assert f(Shape(layers=(0, 2), intermediate_size=384))["macs"] < base["macs"]
    assert f(Shape(layers=(0, 2), num_attention_heads=6))["macs"] < base["macs"]
    narrow = f(Shape(layers=(0, 2), hidden_size=192))
    assert narrow["macs"] < base["macs"] / 3  # width squared, about
    # a decoder's token pays its LM head: the vocabulary dominates a small student
    dec = features(Shape(layers=tuple(range(10))), LLAMA, 256, decoder=True)
    assert 576 * 49152 / dec["macs"] > 0.3


def test_fit_line_recovers_a_line_and_refuses_a_falling_or_degenerate_one():
    line = fit_line([(1.0, 3.0), (2.0, 5.0), (4.0, 9.0)])
    assert line.slope == pytest.approx(2.0) and line.intercept == pytest.approx(1.0)
    assert line.max_residual == pytest.approx(0.0, abs=1e-9) and line.best_ratio == pytest.approx(1.0)
    assert fit_line([(1.0, 5.0), (2.0, 3.0)]) is None  # cost falling with compute: not a cost model
    assert fit_line([(1.0, 5.0), (1.0, 6.0)]) is None


def _measured(p50, size):
    return {"status": "measured", "p50_ms": p50, "p95_ms": p50 * 1.1, "size_mb": size}


def _model(points, min_points=3, max_residual=0.25):
    model = CostModel(min_points, max_residual, margin=1.25, size_margin=1.05)
    for macs, p50, size in points:
        model.add(("onnx", "int8"), {"macs": macs, "params": macs}, _measured(p50, size))
    return model


def test_a_shape_far_over_a_latency_budget_is_skipped_with_its_prediction():
    model = _model([(1.0, 2.0, 1.0), (2.0, 3.0, 2.0), (3.0, 4.0, 3.0)])
    why = model.hopeless(("onnx", "int8"), {"macs": 10.0, "params": 10.0}, {}, {"p95_latency_ms": 5.0})
    assert why is not None and why["budget"] == "p95_latency_ms" and why["points"] == 3
    assert "beyond the x1.25 margin" in why["reason"]
    # within the margin (the full measurement decides) or under budget: measured
    assert model.hopeless(("onnx", "int8"), {"macs": 4.5, "params": 4.5}, {}, {"p95_latency_ms": 5.0}) is None
    # another export has no points: nothing is known about it
    assert (
        model.hopeless(("openvino", "int8"), {"macs": 10.0, "params": 10.0}, {}, {"p95_latency_ms": 5.0})
        is None
    )


def test_relative_budgets_are_judged_against_the_teachers_screening():
    model = _model([(1.0, 2.0, 1.0), (2.0, 3.0, 2.0), (3.0, 4.0, 3.0)])
    teacher = {"p50_ms": 20.0, "size_mb": 10.0}
    slow = model.hopeless(
        ("onnx", "int8"), {"macs": 12.0, "params": 1.0}, teacher, {"speedup_vs_teacher": 3.0}
    )
    assert slow is not None and slow["budget"] == "speedup_vs_teacher"  # 20 / 13 ms = 1.5x < 3 / 1.25
    big = model.hopeless(("onnx", "int8"), {"macs": 1.0, "params": 6.0}, teacher, {"size_vs_teacher": 0.4})
    assert big is not None and big["budget"] == "size_vs_teacher"  # 6 MB / 10 MB > 0.4 x 1.05


def test_too_few_points_or_a_poor_fit_skip_nothing():
    budgets = {"p95_latency_ms": 5.0}
    far = {"macs": 100.0, "params": 100.0}
    assert _model([(1.0, 2.0, 1.0), (2.0, 3.0, 2.0)]).hopeless(("onnx", "int8"), far, {}, budgets) is None
    noisy = _model([(1.0, 2.0, 1.0), (2.0, 6.0, 2.0), (3.0, 4.0, 3.0), (4.0, 9.0, 4.0)])
    assert noisy.hopeless(("onnx", "int8"), far, {}, budgets) is None
    # a run that was not measured (or ran emulated) is no point of the model
    model = _model([(1.0, 2.0, 1.0), (2.0, 3.0, 2.0)])
    model.add(("onnx", "int8"), {"macs": 3.0, "params": 3.0}, {"status": "error"})
    model.add(("onnx", "int8"), {"macs": 3.0, "params": 3.0}, {**_measured(4.0, 3.0), "emulated": True})
    assert model.hopeless(("onnx", "int8"), far, {}, budgets) is None


def test_the_most_optimistic_measured_reading_is_what_a_skip_must_exceed():
    # the cheapest point ran about 15 % faster than its line: a prediction is read that much lower
    model = _model([(1.0, 1.2, 1.0), (2.0, 3.0, 2.0), (3.0, 3.8, 3.0), (4.0, 5.0, 4.0)], max_residual=0.5)
    line = fit_line([(1.0, 1.2), (2.0, 3.0), (3.0, 3.8), (4.0, 5.0)])
    assert line.best_ratio < 0.9
    budget = (
        line.predict(6.0) / 1.25 * 0.99
    )  # the plain prediction is clearly over; the optimistic one is not
    assert line.predict(6.0) * line.best_ratio < budget * 1.25
    assert (
        model.hopeless(("onnx", "int8"), {"macs": 6.0, "params": 6.0}, {}, {"p95_latency_ms": budget}) is None
    )
