"""Kinetics / PySlowFast-style clip lists."""

from __future__ import annotations

import os

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


def test_an_unlabelled_path_may_hold_spaces(tmp_path):
    (tmp_path / "my film").mkdir()
    (tmp_path / "my film" / "take two").write_bytes(b"")
    csv = tmp_path / "l.txt"
    csv.write_text("my film/une séance.mp4\nmy film/take two\nmy film/take 2.mkv 4\n")
    assert read_clip_list(csv) == [
        (tmp_path / "my film" / "une séance.mp4", None),
        (tmp_path / "my film" / "take two", None),
        (tmp_path / "my film" / "take 2.mkv", 4),
    ]


def test_a_path_ending_in_a_number_is_not_cut_into_a_path_and_a_label(tmp_path):
    """A line naming an existing frame folder or file whose name ends in a space and a number
    ('Episode 1') was read as the path 'Episode' with label 1: `moviessl extract` listed a video that
    does not exist as bad and never extracted the one named. The whole line wins where it names a
    path and its head does not; where both exist, the line is "path label" as before."""
    (tmp_path / "Episode 1").mkdir()
    (tmp_path / "take 2").write_bytes(b"")
    (tmp_path / "a.mp4").write_bytes(b"")
    (tmp_path / "a.mp4 3").mkdir()
    csv = tmp_path / "l.txt"
    csv.write_text("Episode 1\ntake 2\na.mp4 3\nb.mp4 4\n")
    assert read_clip_list(csv) == [
        (tmp_path / "Episode 1", None),
        (tmp_path / "take 2", None),
        (tmp_path / "a.mp4", 3),
        (tmp_path / "b.mp4", 4),
    ]


def test_a_frame_folder_list_looks_at_each_folder_once_not_each_line(tmp_path, monkeypatch):
    """Telling 'Episode 1' (a path) from 'clip 1' (a path and a label) looks at the disk for lines
    without a video extension: a stat per line was 240k lookups for a Kinetics-sized frame-folder
    list, on every rank; one listing per folder is enough."""
    import os
    from pathlib import Path

    from moviessl.data import cliplist

    for c in ("jump", "run"):
        for i in range(20):
            (tmp_path / c / f"clip{i}").mkdir(parents=True)
    lines = [f"{c}/clip{i} {k}" for k, c in enumerate(("jump", "run")) for i in range(20)]
    (tmp_path / "l.txt").write_text("\n".join(lines) + "\n")
    listed = []
    real = os.listdir
    monkeypatch.setattr(cliplist.os, "listdir", lambda p: (listed.append(p), real(p))[1])
    stats, exists = [], Path.exists
    monkeypatch.setattr(Path, "exists", lambda self, **kw: (stats.append(self), exists(self, **kw))[1])
    got = read_clip_list(tmp_path / "l.txt")
    monkeypatch.undo()
    assert stats == []
    assert got[0] == (tmp_path / "jump" / "clip0", 0) and got[-1] == (tmp_path / "run" / "clip19", 1)
    assert sorted(map(str, listed)) == [str(tmp_path / "jump"), str(tmp_path / "run")]


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
    csv.write_text("x" * 300 + " notanint\n")  # a name too long for the filesystem is no file, not an OSError
    with pytest.raises(BadInputError, match="label 'notanint' is not an integer"):
        read_clip_list(csv)


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


def kinetics_tree(root, flat_train=True):
    """A Kinetics download as released: annotations/{train,val}.csv and the clips named
    {youtube_id}_{start:06d}_{end:06d}.mp4, flat (CVDF's K400) or in class folders (the crawler)."""
    ann = root / "annotations"
    ann.mkdir(parents=True)
    (ann / "train.csv").write_text(
        "label,youtube_id,time_start,time_end,split\n"
        "abseiling,--07WQ2iBlw,1,11,train\n"
        '"passing American football (in game)",-5KQ66BBWC4,8,18,train\n'
        "zumba,gone_video1,0,10,train\n"  # removed from YouTube: not in the download
        "abseiling,aB3,120,130,train\n"
    )
    (ann / "val.csv").write_text(
        "label,youtube_id,time_start,time_end,split,is_cc\n"
        "zumba,v1,3,13,val,0\n"
        "air drumming,v2,0,10,val,0\n"  # a class the train list lacks: same ids for both lists
    )
    for name, label in (
        ("--07WQ2iBlw_000001_000011", "abseiling"),
        ("-5KQ66BBWC4_000008_000018", "passing American football (in game)"),
        ("aB3_000120_000130", "abseiling"),
    ):
        d = root / "train" if flat_train else root / "train" / label
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{name}.mp4").write_bytes(b"")
    for name, label in (("v1_000003_000013", "zumba"), ("v2_000000_000010", "air drumming")):
        (root / "val" / label).mkdir(parents=True, exist_ok=True)
        (root / "val" / label / f"{name}.mkv").write_bytes(b"")
    return ann


@pytest.mark.parametrize("flat_train", [True, False])
def test_kinetics_annotation_csv_as_released(tmp_path, caplog, flat_train):
    ann = kinetics_tree(tmp_path / "k400", flat_train)
    # label ids: every class of the annotation folder, alphabetical
    ids = {"abseiling": 0, "air drumming": 1, "passing American football (in game)": 2, "zumba": 3}
    with caplog.at_level("WARNING", logger="moviessl.data"):
        got = read_clip_list(ann / "train.csv")
    assert [(p.name, y) for p, y in got] == [
        ("--07WQ2iBlw_000001_000011.mp4", ids["abseiling"]),
        ("-5KQ66BBWC4_000008_000018.mp4", ids["passing American football (in game)"]),
        ("aB3_000120_000130.mp4", ids["abseiling"]),
    ]
    assert all(p.is_file() and tmp_path / "k400" / "train" in p.parents for p, _ in got)
    assert "1 of 4 clips have no video" in caplog.text and "gone_video1_000000_000010" in caplog.text
    val = read_clip_list(ann / "val.csv")
    assert [(p.parent.name, p.name, y) for p, y in val] == [
        ("zumba", "v1_000003_000013.mkv", ids["zumba"]),
        ("air drumming", "v2_000000_000010.mkv", ids["air drumming"]),
    ]


def test_kinetics_csv_problems_are_one_line(tmp_path):
    ann = kinetics_tree(tmp_path / "k400")
    (ann / "test.csv").write_text("label,youtube_id,time_start,time_end,split\n,t1,0,10,test\n")
    with pytest.raises(BadInputError, match=r"test\.csv: none of its 1 Kinetics clips is a video file under .*test"):
        read_clip_list(ann / "test.csv")
    (tmp_path / "k400" / "test").mkdir()
    (tmp_path / "k400" / "test" / "t1_000000_000010.mp4").write_bytes(b"")
    assert [(p.name, y) for p, y in read_clip_list(ann / "test.csv")] == [("t1_000000_000010.mp4", None)]
    (ann / "bad.csv").write_text("label,youtube_id,time_start,time_end,split\nzumba,x,three,10,train\n")
    with pytest.raises(BadInputError, match=r"bad\.csv:2: needs youtube_id, time_start and time_end"):
        read_clip_list(ann / "bad.csv")
    # float("inf") parses, int() of it overflowed: a traceback instead of this line
    (ann / "inf.csv").write_text(
        "label,youtube_id,time_start,time_end,split\nzumba,x,0,10,train\nzumba,y,inf,10,train\n"
    )
    with pytest.raises(BadInputError, match=r"inf\.csv:3: needs youtube_id, time_start and time_end"):
        read_clip_list(ann / "inf.csv")


def test_kinetics_csv_variants(tmp_path):
    """A BOM, a quoted header, CRLF line ends; an unlabelled test list (DeepMind's K600/K700 test
    CSVs have no label column); rows that say ``validate`` beside a ``val/`` folder."""
    root = tmp_path / "k"
    ann = kinetics_tree(root)
    (ann / "train.csv").write_bytes(
        b'\xef\xbb\xbf"label","youtube_id","time_start","time_end","split"\r\n'
        b'"abseiling","--07WQ2iBlw","1","11","train"\r\n'
    )
    assert [(p.name, y) for p, y in read_clip_list(ann / "train.csv")] == [("--07WQ2iBlw_000001_000011.mp4", 0)]
    (ann / "test.csv").write_text("youtube_id,time_start,time_end,split\nt1,0,10,test\n")
    (root / "test").mkdir()
    (root / "test" / "t1_000000_000010.mp4").write_bytes(b"")
    assert [(p.name, y) for p, y in read_clip_list(ann / "test.csv")] == [("t1_000000_000010.mp4", None)]
    (ann / "validate.csv").write_text("label,youtube_id,time_start,time_end,split\nzumba,v1,3,13,validate\n")
    # classes now: abseiling, air drumming (val.csv), zumba
    assert [(p.name, y) for p, y in read_clip_list(ann / "validate.csv")] == [("v1_000003_000013.mkv", 2)]


def test_cvdf_replacements_of_the_corrupted_k400_clips_are_read(tmp_path):
    """CVDF's K400 train tars hold ~1.4k clips that do not decode; the release's
    replacement_for_corrupted_k400.tgz (unpacked by its k400_extractor.sh to ROOT/replacement/) has
    good copies under the same names. The broken copy in train/ was read (skipped as a bad video)."""
    root = tmp_path / "k400"
    ann = kinetics_tree(root)
    fixed = root / "replacement" / "replacement_for_corrupted_k400" / "aB3_000120_000130.mp4"
    fixed.parent.mkdir(parents=True)
    fixed.write_bytes(b"")
    got = {p.name: (p, y) for p, y in read_clip_list(ann / "train.csv")}
    assert got["aB3_000120_000130.mp4"] == (fixed, 0)
    assert got["--07WQ2iBlw_000001_000011.mp4"][0].parent == root / "train"  # not replaced: as before
    assert len(got) == 3


def test_a_folder_given_as_the_clip_list_is_said_to_be_one(tmp_path):
    """`--data k400/train` (the download's folder, not its list) was 'clip list not found', though
    the folder is there."""
    ann = kinetics_tree(tmp_path / "k400")
    with pytest.raises(BadInputError, match=r"k400/train: is a folder, not a clip list .*annotations/\{split\}\.csv"):
        read_clip_list(tmp_path / "k400" / "train")
    with pytest.raises(BadInputError, match=r"nope\.csv: clip list not found"):
        read_clip_list(ann / "nope.csv")


def test_kinetics_lists_from_two_folders_must_share_a_label_map(tmp_path):
    from moviessl.data.cliplist import check_same_label_map, kinetics_label_map

    ann = kinetics_tree(tmp_path / "k400")
    check_same_label_map(ann / "train.csv", ann / "val.csv")  # one folder: one map, whatever each lists
    assert kinetics_label_map(ann / "val.csv") == [
        "abseiling",
        "air drumming",
        "passing American football (in game)",
        "zumba",
    ]
    other = kinetics_tree(tmp_path / "copy")
    check_same_label_map(ann / "train.csv", other / "val.csv")  # another folder with the same classes
    (other / "train.csv").write_text("label,youtube_id,time_start,time_end,split\nabseiling,aB3,120,130,train\n")
    with pytest.raises(BadInputError, match=r"copy/annotations/val\.csv: its Kinetics classes \(3\) are not those"):
        check_same_label_map(ann / "train.csv", other / "val.csv")  # 'passing American football' only in k400
    plain = tmp_path / "list.csv"
    plain.write_text("a.mp4 0\n")
    assert kinetics_label_map(plain) is None
    check_same_label_map(plain, other / "val.csv")  # a PySlowFast list carries its own ids: nothing to compare


def test_a_byte_order_mark_is_not_part_of_the_first_path(tmp_path):
    """Notepad, Excel and PowerShell save UTF-8 with a byte-order mark: the first video was looked
    for under a name starting with U+FEFF, not found, and skipped as bad."""
    csv = tmp_path / "train.csv"
    csv.write_text("a.mp4 1\nb.mp4 0\n", encoding="utf-8-sig")
    assert read_clip_list(csv) == [(tmp_path / "a.mp4", 1), (tmp_path / "b.mp4", 0)]


def test_a_tilde_in_a_listed_path_is_the_home_folder(tmp_path, monkeypatch):
    """The shell expands `~` on the command line but not inside a list file: `~/movies/a.mp4` was
    read as `<list folder>/~/movies/a.mp4` ('not found'), and a `~/frames/clip 3` frame folder as
    that folder relative to the list. A listed path that starts with `~` is the home folder's."""
    home = tmp_path / "home"
    (home / "frames" / "clip 3").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    (tmp_path / "lists").mkdir()
    csv = tmp_path / "lists" / "l.txt"
    csv.write_text("~/movies/a.mp4 2\n~/frames/clip 3\n~/movies/b.mkv\n")
    assert read_clip_list(csv) == [
        (home / "movies" / "a.mp4", 2),
        (home / "frames" / "clip 3", None),
        (home / "movies" / "b.mkv", None),
    ]


def test_a_video_or_binary_file_given_as_the_clip_list_is_said_to_be_one(tmp_path):
    """`pretrain-backbone --data my_movies/film.mp4` (a user's own movie, not a list naming it) was
    "unreadable ('utf-8' codec can't decode byte 0xb8 ...)"."""
    video = tmp_path / "big buck bunny.mp4"
    video.write_bytes(b"\x00\x00\x00\x18ftypmp42\xb8\xff\xfe")
    with pytest.raises(BadInputError, match=r"big buck bunny\.mp4: is a video, not a clip list: .*'path label'"):
        read_clip_list(video)
    blob = tmp_path / "clips.bin"
    blob.write_bytes(b"\xb8\xff\xfe\x00")
    with pytest.raises(BadInputError, match=r"clips\.bin: not a text file, so not a clip list \(one 'path label'"):
        read_clip_list(blob)


def test_a_list_naming_non_ascii_files_is_read_under_a_non_utf8_locale(tmp_path):
    """The list is UTF-8 text; under LC_ALL=C with PYTHONUTF8=0 Python's file calls take a name only
    as the surrogate escapes of its bytes (PEP 383), so the line's 'Amélie_1.mp4' made os.listdir
    raise UnicodeEncodeError: `moviessl extract --videos list.txt` (and pretraining on the list)
    ended in a traceback. The line's names are the file names' UTF-8 bytes under any locale."""
    import subprocess
    import sys

    (tmp_path / "映画").mkdir()
    (tmp_path / "映画" / "Amélie_1.mp4").write_bytes(b"")
    (tmp_path / "映画" / "Épisode 2").mkdir()  # a frame folder whose name ends in a number
    (tmp_path / "l.txt").write_text("映画/Amélie_1.mp4 3\n映画/Épisode 2\n", encoding="utf-8")
    code = (
        "import sys; from moviessl.data.cliplist import read_clip_list\n"
        "for p, y in read_clip_list(sys.argv[1]): print(p.exists(), y)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, os.fsencode(tmp_path / "l.txt")],
        env={**os.environ, "LC_ALL": "C", "PYTHONUTF8": "0"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-600:]
    assert done.stdout.split("\n") == ["True 3", "True None", ""]
