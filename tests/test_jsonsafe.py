"""sftlab.jsonsafe: NaN and infinities leave sftlab as null, everything else as json.dumps writes it."""

import json

from sftlab.jsonsafe import dumps, finite


def test_non_finite_floats_become_null_at_any_depth():
    record = {"step": 3, "loss": float("nan"), "grad_norm": float("inf"), "lr": 1e-4,
              "nested": [float("-inf"), 2.5, {"x": float("nan")}], "name": "NaN", "flag": True}
    text = dumps(record)
    assert "NaN" not in text.replace('"NaN"', "") and "Infinity" not in text
    assert json.loads(text) == {"step": 3, "loss": None, "grad_norm": None, "lr": 1e-4,
                                "nested": [None, 2.5, {"x": None}], "name": "NaN", "flag": True}
    assert finite((1.0, float("nan"))) == [1.0, None]
