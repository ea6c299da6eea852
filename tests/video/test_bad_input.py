"""Every kind of bad input -> BadInputError naming the file and cause; CLI: one line, exit 2."""

import json
import struct
import subprocess
import sys

import numpy as np
import pytest

from moviessl.cli import main
from moviessl.errors import BadInputError
from moviessl.video import VideoReader, probe, read_clip

from .vidgen import codes


def _audio_only(path):
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=16000)
        f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        f.sample_rate = 16000
        for p in list(s.encode(f)) + list(s.encode()):
            c.mux(p)
    return path


def _garble_mdat(src, dst):
    """Keep the mp4 container intact but replace every coded byte with noise."""
    b = bytearray(src.read_bytes())
    i = b.find(b"mdat")
    size = struct.unpack(">I", b[i - 4 : i])[0]
    b[i + 4 : i - 4 + size] = np.random.default_rng(0).integers(0, 256, size - 8, dtype=np.uint8).tobytes()
    dst.write_bytes(bytes(b))
    return dst


@pytest.fixture(scope="module")
def bad(tmp_path_factory, videos):
    d = tmp_path_factory.mktemp("bad")
    (d / "empty.mp4").write_bytes(b"")
    (d / "notes.mp4").write_text("this is a text file, not a video\n" * 20)
    full = videos["mp4"].read_bytes()  # moov at the end: cutting it loses the index
    (d / "cut.mp4").write_bytes(full[: len(full) // 2])
    head = videos["mp4_fast"].read_bytes()  # faststart: index first, so cutting leaves only the header
    (d / "header_only.mp4").write_bytes(head[: head.find(b"mdat") + 64])
    _audio_only(d / "audio.m4a")
    _garble_mdat(videos["mp4"], d / "garbled.mp4")
    (d / "emptydir").mkdir()
    (d / "my movies").mkdir()  # a user's own films, given where one video is read
    for name in ("big buck bunny.mp4", "bikes.mp4"):
        (d / "my movies" / name).write_bytes(videos["mp4"].read_bytes())
    return d


CAUSES = [
    ("missing.mp4", "no such file"),
    ("empty.mp4", "empty file"),
    ("notes.mp4", "not a readable video container"),
    ("cut.mp4", "not a readable video container"),
    ("header_only.mp4", "no decodable video frames|no video packets"),
    ("audio.m4a", "no video stream"),
    ("garbled.mp4", "no decodable video frames"),
    ("emptydir", "no .jpg/.png frames"),
    ("my movies", "is a folder of 2 videos, not a video file or a frame folder: name one"),
]


@pytest.mark.parametrize("name,cause", CAUSES)
def test_bad_input_raises(bad, name, cause):
    p = bad / name
    with pytest.raises(BadInputError, match=cause) as e:
        VideoReader(p)
    assert e.value.path == str(p) and str(e.value).startswith(str(p) + ": ")
    assert "\n" not in str(e.value)
    with pytest.raises(BadInputError):
        read_clip(p, 1.0)


@pytest.mark.parametrize("name,cause", CAUSES)
def test_cli_one_line_exit_2(bad, name, cause, capsys):
    assert main(["probe", str(bad / name)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = [ln for ln in err.splitlines() if not ln.startswith("WARNING")]
    assert len(lines) == 1 and lines[0].startswith(f"moviessl: error: {bad / name}: "), err


def test_cli_subprocess_no_traceback(bad):
    r = subprocess.run(
        [sys.executable, "-m", "moviessl.cli", "probe", str(bad / "garbled.mp4")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and r.stdout == ""
    assert "Traceback" not in r.stderr and r.stderr.strip().count("\n") == 0


def test_truncated_streamable_file_keeps_what_decodes(tmp_path, videos):
    # A faststart mp4 cut in the middle: the header still promises 300 frames; only a prefix decodes.
    data = videos["mp4_fast"].read_bytes()
    p = tmp_path / "half.mp4"
    p.write_bytes(data[: len(data) // 2])
    with VideoReader(p) as r:
        n = r.num_frames
        assert 30 < n < 300
        idx = np.linspace(0, n - 1, 12).astype(int)
        got = codes(r.get_frames(idx))
    # what decodes is the truth: every index returns the frame it names, except near the cut, where a
    # frame lost inside the last GOP (B-frame reordering) shifts the last index to a neighbouring
    # frame -- before or after it, depending on which frame of the GOP was lost (both seen)
    assert got[:-1] == idx[:-1].tolist() and abs(got[-1] - idx[-1]) <= 1 and got[-1] > got[-2]
    info = probe(p)
    assert info["num_frames"] == n


def test_mkv_cut_mid_cluster(tmp_path, videos):
    data = videos["mkv"].read_bytes()
    p = tmp_path / "cut.mkv"
    p.write_bytes(data[: int(len(data) * 0.6)])
    with VideoReader(p, verify="full") as r:
        n = r.num_frames
        assert 10 < n < 120
        # every frame the reader claims decodes, and carries its own index (up to a lost B-frame)
        got = codes(r.get_frames(range(n)))
    assert sum(g == i for i, g in enumerate(got)) >= n - 3


def test_probe_json(videos, capsys):
    assert main(["probe", str(videos["mp4_25"])]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d == {"fps": 25.0, "num_frames": 250, "duration_s": 10.0, "width": 160, "height": 96, "num_events": 5}


@pytest.fixture(params=["python<3.14", "python>=3.14"])
def locked(request, tmp_path, monkeypatch):
    """A folder this user may not search, with a video and a list file in it. Tests run as root
    (who may search anything), so the refusal is simulated at ``os.stat``; from Python 3.14 on
    pathlib's exists/is_file/is_dir answer False for such a path instead of raising (CPython
    gh-144525), simulated on older versions in the second case."""
    import errno
    import os
    import pathlib

    d = tmp_path / "locked"
    d.mkdir()
    (d / "film.mp4").write_bytes(b"x")
    (d / "clips.txt").write_text("film.mp4 0\n")
    stat = os.stat

    def refusing_stat(path, *a, **k):
        p = os.fspath(path)
        if isinstance(p, str) and p.startswith(str(d) + os.sep):
            raise PermissionError(errno.EACCES, "Permission denied", p)
        return stat(path, *a, **k)

    monkeypatch.setattr(os, "stat", refusing_stat)
    if request.param == "python>=3.14":
        for name in ("exists", "is_file", "is_dir"):
            method = getattr(pathlib.Path, name)

            def quiet(self, *a, _method=method, **k):
                try:
                    return _method(self, *a, **k)
                except OSError:
                    return False

            monkeypatch.setattr(pathlib.Path, name, quiet)
    return d


def test_a_video_this_user_may_not_look_up_is_permission_denied_not_missing(locked, tmp_path, capsys):
    """Under Python 3.14, `--videos` (extract, extract-instances, finetune vidsitu), `probe` and a
    clip list naming a path in a folder the user may not search said "no such video file" / "no
    such file or directory" / "clip list not found" / "no video file or frame folder" for every
    segment: the user was sent looking for a file that is there. Each says permission denied,
    naming the path, on every Python version."""
    from moviessl.data.cliplist import read_clip_list
    from moviessl.features.extract import find_videos
    from moviessl.video import resolve_video

    film, clips = locked / "film.mp4", locked / "clips.txt"
    for call in (
        lambda: find_videos(film),
        lambda: find_videos(clips),
        lambda: resolve_video(locked, "film"),
        lambda: VideoReader(film),
        lambda: read_clip_list(clips),
    ):
        with pytest.raises(PermissionError) as e:
            call()
        assert str(locked) in e.value.filename
    out = str(tmp_path / "out")
    for argv in (
        ["probe", str(film)],
        ["extract", "--backbone", str(tmp_path / "bb.pt"), "--videos", str(film), "--out", out],
        ["extract-instances", "--backbone", "bb.pt", "--videos", str(film), "--tracks", "t", "--out", out],
    ):
        assert main(argv) == 2
        assert capsys.readouterr().err.strip() == f"moviessl: error: {film}: Permission denied", argv
