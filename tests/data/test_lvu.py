"""LVU label files: whitespace parsing, header skip, class ids as given, centred regression."""

from __future__ import annotations

import math

import pytest

from moviessl.data.lvu import LIKE_RATIO_CENTER, LVU_TASKS, VIEW_COUNT_CENTER, class_names, is_regression, read_labels
from moviessl.errors import BadInputError


def _write(root, task, split, text):
    p = root / "lvu_1.0" / task / f"{split}.csv"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


def test_task_table_matches_lvu():
    sizes = {t: s["num_classes"] for t, s in LVU_TASKS.items()}
    assert sizes == {
        "relationship": 4,
        "way_speaking": 5,
        "scene": 6,
        "director": 10,
        "writer": 10,
        "year": 9,
        "genre": 4,
        "like_ratio": 1,
        "view_count": 1,
    }
    assert list(LVU_TASKS) == [
        "relationship",
        "way_speaking",
        "scene",
        "director",
        "writer",
        "year",
        "genre",
        "like_ratio",
        "view_count",
    ]
    assert is_regression("view_count") and not is_regression("genre")
    assert LIKE_RATIO_CENTER == 9.138220535629456 and VIEW_COUNT_CENTER == 11.76425435683139


def test_classification_gaps_and_whitespace(tmp_path):
    _write(
        tmp_path,
        "writer",
        "train",
        "class_id class_name youtube_id imdb_id\n9 nm0001 abc-DEF_123 tt01\n0   \\N\tq_w-e_r-t_y tt02\n\n",
    )
    assert read_labels(tmp_path, "writer", "train") == [("abc-DEF_123", 9), ("q_w-e_r-t_y", 0)]
    assert class_names(tmp_path, "writer") == {9: "nm0001", 0: "\\N"}
    # the lvu_1.0 folder itself is accepted as root too
    assert read_labels(tmp_path / "lvu_1.0", "writer", "train")[0] == ("abc-DEF_123", 9)


def test_a_byte_order_mark_is_read_past(tmp_path):
    """A label file or a user's tracks JSON saved with a byte-order mark (Excel's "CSV UTF-8", an
    editor) reads as a plain UTF-8 one; json.loads refused the tracks file."""
    from moviessl.data.lvu import read_tracks

    p = _write(tmp_path, "genre", "train", "")
    p.write_text("class_id class_name youtube_id imdb_id\n2 Drama abc-DEF_123 tt01\n", encoding="utf-8-sig")
    assert read_labels(tmp_path, "genre", "train") == [("abc-DEF_123", 2)]
    tracks = tmp_path / "t.json"
    body = '{"seconds": [{"t": 3, "track_ids": [1], "boxes": [[0.1, 0.1, 0.5, 0.6]]}]}'
    tracks.write_text(body, encoding="utf-8-sig")
    assert read_tracks(tracks).sec.tolist() == [3]


def test_regression_centred(tmp_path):
    _write(tmp_path, "like_ratio", "val", "like_count dislike_count youtube_id imdb_id\n90 10 aaaaaaaaaaa tt1\n")
    _write(tmp_path, "view_count", "test", "view_count youtube_id imdb_id\n1000 bbbbbbbbbbb tt2\n")
    [(yid, v)] = read_labels(tmp_path, "like_ratio", "val")
    assert yid == "aaaaaaaaaaa" and v == pytest.approx(9.0 - LIKE_RATIO_CENTER)
    [(yid, v)] = read_labels(tmp_path, "view_count", "test")
    assert yid == "bbbbbbbbbbb" and v == pytest.approx(math.log(1000) - VIEW_COUNT_CENTER)


@pytest.mark.parametrize(
    "task,body,msg",
    [
        ("scene", "1 office aaaaaaaaaaa\n", "expected 4"),
        ("scene", "x office aaaaaaaaaaa tt1\n", "bad label"),
        ("scene", "6 office aaaaaaaaaaa tt1\n", "outside 0..5"),
        ("view_count", "0 aaaaaaaaaaa tt1\n", "view_count must be > 0"),
        ("like_ratio", "0 0 aaaaaaaaaaa tt1\n", "positive sum"),
        # nan / inf parse as floats: they gave a NaN or Infinity score and exit 0
        ("view_count", "nan aaaaaaaaaaa tt1\n", "not a finite count: nan"),
        ("view_count", "inf aaaaaaaaaaa tt1\n", "not a finite count"),
        ("like_ratio", "100 nan aaaaaaaaaaa tt1\n", "not a finite count: 100 nan"),
        ("like_ratio", "1e999 2 aaaaaaaaaaa tt1\n", "not a finite count"),
    ],
)
def test_malformed_lines_name_file_and_line(tmp_path, task, body, msg):
    p = _write(
        tmp_path,
        task,
        "train",
        LVU_TASKS[task]["header"] + "\n" + "0 office ccccccccccc tt0\n" * (task == "scene") + body,
    )
    with pytest.raises(BadInputError, match=msg) as e:
        read_labels(tmp_path, task, "train")
    line = 3 if task == "scene" else 2
    assert str(e.value).startswith(f"{p}:{line}: ")


def test_a_video_listed_twice_with_different_labels_is_refused(tmp_path):
    """The last line used to win silently. LVU's reference appends every line's label to the
    video's boxes and unpacks three values, so it fails on any repeated id; the same label twice is
    harmless here and stays accepted (kept once)."""
    head = LVU_TASKS["relationship"]["header"] + "\n"
    p = _write(tmp_path, "relationship", "val", head + "0 friend aaaaaaaaaaa tt1\n1 ex bbbbbbbbbbb tt2\n")
    p.write_text(head + "0 friend aaaaaaaaaaa tt1\n1 ex bbbbbbbbbbb tt2\n2 husband_wife aaaaaaaaaaa tt1\n")
    with pytest.raises(BadInputError) as e:
        read_labels(tmp_path, "relationship", "val")
    msg = str(e.value)
    assert msg.startswith(f"{p}:4: ") and "'aaaaaaaaaaa'" in msg and "line 2" in msg and "\n" not in msg
    assert "('2 husband_wife'; line 2 gives '0 friend')" in msg  # a class by its id and name
    p.write_text(head + "0 friend aaaaaaaaaaa tt1\n1 ex bbbbbbbbbbb tt2\n0 friend aaaaaaaaaaa tt1\n")
    assert read_labels(tmp_path, "relationship", "val") == [("aaaaaaaaaaa", 0), ("bbbbbbbbbbb", 1)]
    # regression labels compare by value: another count on the second line is a conflict
    q = _write(tmp_path, "view_count", "val", "view_count youtube_id imdb_id\n1000 ccccccccccc tt3\n")
    q.write_text("view_count youtube_id imdb_id\n1000 ccccccccccc tt3\n1001 ccccccccccc tt3\n")
    with pytest.raises(BadInputError, match=r":3: youtube id 'ccccccccccc' is listed again with another label"):
        read_labels(tmp_path, "view_count", "val")


def test_missing_and_unknown(tmp_path):
    with pytest.raises(BadInputError, match="not found"):
        read_labels(tmp_path, "genre", "train")
    with pytest.raises(BadInputError, match="unknown LVU task"):
        read_labels(tmp_path, "mood", "train")
    with pytest.raises(BadInputError, match="unknown LVU split"):
        read_labels(tmp_path, "genre", "dev")


@pytest.mark.parametrize(
    "task,body",
    [
        ("scene", "0 office aaaaaaaaaaa tt1\n1 airport bbbbbbbbbbb tt2\n"),
        ("view_count", "1000 aaaaaaaaaaa tt1\n"),
        ("like_ratio", "90 10 aaaaaaaaaaa tt1\n"),
    ],
)
def test_a_file_without_its_header_is_refused_not_read_one_video_short(tmp_path, task, body):
    """Line 1 is skipped as the header (LVU's reference does so): a file saved without it, e.g. a
    user's list of the videos still available, silently lost its first video."""
    p = _write(tmp_path, task, "train", body)
    with pytest.raises(BadInputError, match="a label line, not the header") as e:
        read_labels(tmp_path, task, "train")
    assert str(e.value).startswith(f"{p}:1: ") and LVU_TASKS[task]["header"] in str(e.value)


def test_a_missing_task_folder_is_named_where_it_belongs(tmp_path):
    """--data-root lvu_1.0 itself with one task's folder missing (a partial download) named
    lvu_1.0/lvu_1.0/<task>/train.csv, a path nobody has, as the file not found."""
    _write(tmp_path, "scene", "train", LVU_TASKS["scene"]["header"] + "\n0 office aaaaaaaaaaa tt1\n")
    for root in (tmp_path, tmp_path / "lvu_1.0"):
        with pytest.raises(BadInputError) as e:
            read_labels(root, "genre", "train")
        assert str(e.value) == f"{tmp_path / 'lvu_1.0' / 'genre' / 'train.csv'}: LVU label file not found"
    # a label folder under another name is found by its task folders
    (tmp_path / "lvu_1.0").rename(tmp_path / "labels")
    assert read_labels(tmp_path / "labels", "scene", "train") == [("aaaaaaaaaaa", 0)]
    with pytest.raises(BadInputError, match=r"labels/genre/train\.csv: LVU label file not found"):
        read_labels(tmp_path / "labels", "genre", "train")


def test_like_ratio_of_counts_past_a_floats_range_is_the_ratio_not_nan(tmp_path):
    """10 x like / (like + dislike) overflows for counts past ~1e307: 1e308 likes and 1e308 dislikes
    read as a NaN target (inf / inf), 1e308 likes and none as inf -- a finite label file training
    and scoring on NaN. The target is the same ratio, from the counts' quotient."""
    body = "like_count dislike_count youtube_id imdb_id\n1e308 1e308 a tt1\n1e308 0 b tt2\n0 1e308 c tt3\n3 1 d tt4\n"
    _write(tmp_path, "like_ratio", "val", body)
    got = {vid: label + LIKE_RATIO_CENTER for vid, label in read_labels(tmp_path, "like_ratio", "val")}
    assert got == pytest.approx({"a": 5.0, "b": 10.0, "c": 0.0, "d": 7.5})
