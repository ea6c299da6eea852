"""Kinetics / PySlowFast-style clip lists."""

from __future__ import annotations

import pytest

from moviessl.data.cliplist import read_clip_list
from moviessl.errors import BadInputError


def test_relative_absolute_and_unlabelled(tmp_path):
    (tmp_path / "lists").mkdir()
    csv = tmp_path / "lists" / "train.csv"
    csv.write_text(f"videos/a.mp4 3\n# comment\n\n{tmp_path}/b.mkv\t0\nc.webm\n")
    got = read_clip_list(csv)
    assert got == [
        (tmp_path / "lists" / "videos" / "a.mp4", 3),
        (tmp_path / "b.mkv", 0),
        (tmp_path / "lists" / "c.webm", None),
    ]


def test_bad_label_names_line(tmp_path):
    csv = tmp_path / "l.csv"
    csv.write_text("a.mp4 1\nb.mp4 x\n")
    with pytest.raises(BadInputError, match=r"l\.csv:2: label 'x' is not an integer"):
        read_clip_list(csv)
    csv.write_text("a.mp4 -1\n")
    with pytest.raises(BadInputError, match="negative label"):
        read_clip_list(csv)
    with pytest.raises(BadInputError, match="not found"):
        read_clip_list(tmp_path / "none.csv")


def test_a_comma_separated_line_is_named(tmp_path):
    """``a.mp4,1`` is one whitespace field, a path that does not exist; when ``a.mp4`` does, say why."""
    (tmp_path / "a.mp4").write_bytes(b"")
    csv = tmp_path / "l.csv"
    csv.write_text("a.mp4 1\na.mp4,1\n")
    with pytest.raises(BadInputError, match=r"l\.csv:2: fields are separated by whitespace"):
        read_clip_list(csv)
    (tmp_path / "b.mp4,2").write_bytes(b"")  # a file really named so is an unlabelled path
    csv.write_text("b.mp4,2\n")
    assert read_clip_list(csv) == [(tmp_path / "b.mp4,2", None)]
