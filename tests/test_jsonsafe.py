"""sftlab.jsonsafe: NaN and infinities leave sftlab as null, everything else as json.dumps writes it."""

import json

import pytest

from sftlab.jsonsafe import dumps, finite


def test_non_finite_floats_become_null_at_any_depth():
    record = {"step": 3, "loss": float("nan"), "grad_norm": float("inf"), "lr": 1e-4,
              "nested": [float("-inf"), 2.5, {"x": float("nan")}], "name": "NaN", "flag": True}
    text = dumps(record)
    assert "NaN" not in text.replace('"NaN"', "") and "Infinity" not in text
    assert json.loads(text) == {"step": 3, "loss": None, "grad_norm": None, "lr": 1e-4,
                                "nested": [None, 2.5, {"x": None}], "name": "NaN", "flag": True}
    assert finite((1.0, float("nan"))) == [1.0, None]


def test_written_json_is_one_line_whatever_the_strings_hold():
    """U+2028, U+2029 and U+0085 are what json.dumps(ensure_ascii=False) leaves raw and str.splitlines splits on:
    written escaped, as are the control characters splitlines also splits on."""
    from sftlab.jsonsafe import jsonl, lines

    record = {"text": "a\u2028b\u2029c\x85d\x1ce\x1df\x1eg\vh\fi\nj\rk", "zh": "中文"}
    line = dumps(record, ensure_ascii=False)
    assert line == ('{"text": "a\\u2028b\\u2029c\\u0085d\\u001ce\\u001df\\u001eg\\u000bh\\fi\\nj\\rk", '
                    '"zh": "中文"}')
    text = jsonl([record, {"n": float("nan")}])
    assert text.splitlines() == [line, '{"n": null}']
    assert [json.loads(x) for x in lines(text)] == [record, {"n": None}]
    # a reader of sftlab's JSONL splits on "\n" alone: a raw U+2028 inside a string stays inside it
    assert lines('{"a": "x\u2028y"}\n\n{"b": 1}\n') == ['{"a": "x\u2028y"}', '{"b": 1}']


def test_reading_back_is_never_anything_but_value_error_or_os_error(tmp_path):
    import os
    import threading

    from sftlab.jsonsafe import NotAFile, load, loads

    with pytest.raises(ValueError, match="nested too deeply"):
        loads("[" * 100_000 + "]" * 100_000)
    fifo = tmp_path / "train_process.json"
    os.mkfifo(fifo)
    (tmp_path / "real.json").write_text('{"x": 1}')
    (tmp_path / "link.json").symlink_to(tmp_path / "real.json")
    (tmp_path / "big.json").write_text("[" + "1," * 100 + "1]")
    seen = {}

    def read_all():
        for name in ("train_process.json", "link.json", "big.json"):
            try:
                load(tmp_path / name, max_bytes=100)
            except NotAFile as e:
                seen[name] = str(e)

    reader = threading.Thread(target=read_all, daemon=True)
    reader.start()
    reader.join(10)
    assert not reader.is_alive(), "reading a FIFO blocked"
    assert seen == {"train_process.json": "train_process.json is a FIFO, not a file sftlab writes",
                    "link.json": "link.json is a symbolic link, not a file sftlab writes",
                    "big.json": "big.json is larger than 100 bytes, more than sftlab writes there"}
    assert load(tmp_path / "real.json") == {"x": 1}
