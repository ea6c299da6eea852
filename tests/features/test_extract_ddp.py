"""``moviessl extract --devices 2``: DDP (gloo, CPU) shards the videos over processes and merges one index.

Lightning's DDP launcher re-executes the command line once per extra device, so the extractor
runs as a real ``moviessl`` subprocess here (never in-process under pytest).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

CORRUPT = "v_corruptCopy_seg_0_10"


def moviessl_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("moviessl")
    exe = str(exe) if exe.is_file() else shutil.which("moviessl")
    if exe is None:
        pytest.skip("the moviessl console script is not installed")
    return [exe]


def run_cli(*args, timeout: float = 180) -> subprocess.CompletedProcess:
    from moviessl.dist import fresh_launch_env

    env = fresh_launch_env()  # a fresh single-node launch, a free port
    env["PYTHONUNBUFFERED"] = "1"
    p = subprocess.run(
        [*moviessl_cmd(), "extract", *map(str, args)], env=env, capture_output=True, text=True, timeout=timeout
    )
    assert p.returncode == 0, f"exit {p.returncode}\n{p.stdout}\n{p.stderr[-4000:]}"
    return p


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from moviessl.config import load_config
    from moviessl.ssl.pretrain import pretrain
    from moviessl.synth import generate

    tmp = tmp_path_factory.mktemp("ddp")
    synth = generate(tmp / "synth", preset="tiny", progress=False)
    clips = synth / "vidsitu" / "vsitu_video_trimmed_dir"
    good = sorted(clips.glob("*.mp4"))
    data = good[0].read_bytes()
    (clips / f"{CORRUPT}.mp4").write_bytes(data[: len(data) * 2 // 5])  # a truncated download
    # the CPU preset's random init, narrowed and on shorter clips: the test is about sharding, not FLOPs
    cfg = load_config("backbone", "cpu", ["data.num_frames=8", "data.stride=8", "data.short_side=32", "data.crop=32"])
    cfg.model.overrides = {"widths": [8, 8, 16, 16], "stem_width": 8}  # (a struct-checked override can't add keys)
    pretrain("random", synth / "actions" / "train.csv", tmp / "bb", cfg, run_probe=False, progress=False)
    return {
        "videos": synth / "vidsitu",
        "backbone": tmp / "bb" / "model.pt",
        "ids": sorted(p.stem for p in good),
        "tmp": tmp,
    }


def extract(s, out: Path, devices: int, *more) -> subprocess.CompletedProcess:
    return run_cli(
        "--backbone",
        s["backbone"],
        "--videos",
        s["videos"],
        "--out",
        out,
        "--accelerator",
        "cpu",
        "--devices",
        devices,
        *more,
    )


def check_folder(out: Path, ids: list[str]) -> dict:
    """One merged index listing every video once; nothing else left behind."""
    index = json.loads((out / "index.json").read_text())
    assert sorted(index["videos"]) == sorted(ids + [CORRUPT])  # a JSON object: each id exactly once
    assert index["counts"] == {"ok": len(ids), "bad": 1}
    bad = index["videos"][CORRUPT]
    assert bad["status"] == "bad" and f"{CORRUPT}.mp4" in bad["error"]
    assert all(index["videos"][v]["status"] == "ok" and index["videos"][v]["num_events"] == 5 for v in ids)
    assert sorted(p.name for p in out.iterdir()) == sorted(["index.json", *(f"{v}_feats.npy" for v in ids)])
    return index


def planned_split(videos: Path, skip=()) -> dict[int, int]:
    """Videos per rank as rank 0 splits its to-do list: by file size, largest first to the least
    loaded (similar clips: none is so large that it would be spread by chunk over the ranks)."""
    from moviessl.features.extract import balanced_shards, find_videos, source_bytes, spread_over_ranks

    costs = [source_bytes(p) for v, p in find_videos(videos)[0] if v not in skip]
    assert spread_over_ranks(costs, 2) == []
    return {r: len(s) for r, s in enumerate(balanced_shards(costs, 2))}


def rank_counts(stderr: str) -> dict[int, tuple[int, int, int]]:
    return {
        int(r): (int(ok), int(bad), int(n))
        for r, ok, bad, n in re.findall(r"rank (\d)/2: (\d+) ok, (\d+) bad of its (\d+) videos", stderr)
    }


def test_ddp_extract_shards_merges_and_resumes(setup):
    s, ids = setup, setup["ids"]
    a, b = s["tmp"] / "A", s["tmp"] / "B"
    pa = extract(s, a, 2, "--ddp-timeout-s", 600)  # the barrier's limit raised: a DDPStrategy of our own
    ia = check_folder(a, ids)
    # both processes did their share of the 13 videos as rank 0 split them by size (the truncated one,
    # the smallest, on exactly one rank)
    counts = rank_counts(pa.stderr)
    assert {r: c[2] for r, c in counts.items()} == planned_split(s["videos"]), pa.stderr[-3000:]
    assert min(c[2] for c in counts.values()) >= 5  # similar 10-s clips: nearly even counts
    assert sum(c[0] for c in counts.values()) == len(ids) and sum(c[1] for c in counts.values()) == 1
    assert pa.stdout.count("videos ok") == 1  # only rank 0 reports the merged summary

    extract(s, b, 1)
    ib = check_folder(b, ids)
    assert {k: v for k, v in ia.items() if k != "videos"} == {k: v for k, v in ib.items() if k != "videos"}
    feats_b = {v: np.load(b / f"{v}_feats.npy") for v in ids}
    for v in ids:
        fa = np.load(a / f"{v}_feats.npy")
        assert fa.shape == (5, 16) and fa.dtype == np.float32
        np.testing.assert_allclose(fa, feats_b[v], rtol=1e-4, atol=1e-5, err_msg=v)
    assert not np.allclose(feats_b[ids[0]], feats_b[ids[1]])  # real per-video features

    # resume after a killed DDP run: no index yet, each rank's journal holds what it finished (rank 1's
    # ends in a torn line), 3 videos were never written, a temp file of the write in flight remains
    (a / "index.json").unlink()
    lost = [ids[0], ids[3], ids[8]]
    for v in lost:
        (a / f"{v}_feats.npy").unlink()
    (a / f".{lost[0]}_feats.npy.k1ll3d.tmp").write_bytes(b"half a file")
    done = [v for v in [*ids, CORRUPT] if v not in lost]
    for r in (0, 1):
        lines = [json.dumps({"id": v, **ia["videos"][v]}) for v in done[r::2]]
        (a / f".index.rank{r}.jsonl").write_text("\n".join(lines) + ('\n{"id": "v_' if r else "\n"))
    mtimes = {v: (a / f"{v}_feats.npy").stat().st_mtime_ns for v in done if v != CORRUPT}
    pr = extract(s, a, 2)
    ir = check_folder(a, ids)
    assert re.search(r"13 videos \(vidsitu layout\): 3 to extract, 10 already done", pr.stderr), pr.stderr[-3000:]
    counts = rank_counts(pr.stderr)  # the 3 lost videos, split 1 + 2 or 2 + 1; the corrupt one not retried
    assert {r: c[2] for r, c in counts.items()} == planned_split(s["videos"], skip=done)
    assert sorted(c[2] for c in counts.values()) == [1, 2] and sum(c[1] for c in counts.values()) == 0
    assert {v: (a / f"{v}_feats.npy").stat().st_mtime_ns for v in mtimes} == mtimes  # finished work kept
    assert ir["videos"] == ia["videos"]
    for v in lost:
        np.testing.assert_allclose(np.load(a / f"{v}_feats.npy"), feats_b[v], rtol=1e-4, atol=1e-5, err_msg=v)


@pytest.fixture(scope="module")
def film_setup(tmp_path_factory):
    """A 64-s film (32 events: 8 chunks of 4) beside a 6-s clip and a large file that is no video,
    a tiny random backbone and TxE."""
    from moviessl.checkpoint import arch_spec, save_checkpoint
    from moviessl.models import build_slowd, build_txe
    from moviessl.video.filmgen import make_film

    tmp = tmp_path_factory.mktemp("ddp_film")
    (tmp / "films").mkdir()
    make_film(tmp / "films" / "a_film.mp4", 64.0, width=160, height=96, gop=60)
    make_film(tmp / "films" / "b_clip.mp4", 6.0, width=160, height=96, gop=60, seed=1)
    size = (tmp / "films" / "a_film.mp4").stat().st_size
    (tmp / "films" / "c_junk.mp4").write_bytes(np.random.default_rng(0).bytes(3 * size))
    kw = dict(preset="slowd_cpu", widths=[8, 8, 16, 16], stem_width=8)
    model = build_slowd(**kw)
    save_checkpoint(
        tmp / "backbone.pt",
        stage="backbone",
        arch=arch_spec("moviessl.models.slowd:build_slowd", **kw),
        state_dict=model.state_dict(),
        meta={
            "input": {"num_frames": 4, "stride": 8, "short_side": 32, "crop": 32},
            "method": "random",
            "out_dim": model.out_dim,
        },
    )
    txe = build_txe("txe_cpu", in_dim=model.out_dim, dim=32, heads=2, mlp_dim=64)
    save_checkpoint(
        tmp / "txe.pt",
        stage="context",
        arch=arch_spec(
            "moviessl.models.txe:build_txe", preset="txe_cpu", in_dim=model.out_dim, dim=32, heads=2, mlp_dim=64
        ),
        state_dict=txe.state_dict(),
        meta={"window": 5, "token_stride_s": 2.0, "in_dim": model.out_dim},
    )
    return tmp


def test_ddp_spreads_one_long_film_over_the_ranks_and_resumes(film_setup, monkeypatch):
    """One film beside a short clip on 2 ranks: the film's chunks are split over both (it alone is
    more than one rank's share) and over each rank's 2 workers, rank 0 writes it after both are
    done; the largest file, which does not open, is left whole and listed bad once; a run killed
    inside the film resumes under DDP with only the chunks not committed redone. Same arrays as one
    process."""
    from moviessl.features import extract as ex

    tmp = film_setup
    kw = dict(batch_events=2, chunk_events=4, contextualizer=tmp / "txe.pt")  # rank 0 runs the TxE at the end
    ref = tmp / "ref"
    ex.extract(tmp / "backbone.pt", tmp / "films", ref, num_workers=0, accelerator="cpu", **kw)
    ddp = ("--batch-events", 2, "--chunk-events", 4, "--num-workers", 2, "--contextualizer", tmp / "txe.pt")
    s = {"backbone": tmp / "backbone.pt", "videos": tmp / "films"}

    def check(out: Path) -> dict:
        index = json.loads((out / "index.json").read_text())
        assert index["counts"] == {"ok": 2, "bad": 1}
        assert {v: e.get("num_events") for v, e in index["videos"].items()} == {
            "a_film": 32,
            "b_clip": 3,
            "c_junk": None,
        }
        assert index["videos"]["c_junk"]["status"] == "bad" and "c_junk.mp4" in index["videos"]["c_junk"]["error"]
        names = [f"{v}_{k}.npy" for v in ("a_film", "b_clip") for k in ("ctx", "feats")]
        assert sorted(p.name for p in out.iterdir()) == [*names, "index.json"]
        for name in names:
            np.testing.assert_allclose(np.load(out / name), np.load(ref / name), rtol=1e-4, atol=1e-5, err_msg=name)
        return index

    def events(stderr: str) -> dict[int, int]:
        line = r"rank (\d)/2: 0 ok, (\d) bad of its (\d) videos and its chunks of 2 film\(s\) [^;]*; (\d+) events"
        got = re.findall(line, stderr)
        assert sorted((int(r), int(bad), int(n)) for r, bad, n, _ in got) == [(0, 1, 1), (1, 0, 0)], stderr[-3000:]
        return {int(r): int(n) for r, _, _, n in got}

    a = tmp / "A"
    p = extract(s, a, 2, *ddp)
    check(a)
    # the film's 32 events split 16 + 16 (4 chunks each); the clip, left alone, spread too: its one
    # chunk on rank 1 (the second spread video's first rank); the junk file whole on rank 0
    assert events(p.stderr) == {0: 16, 1: 16 + 3}, p.stderr[-3000:]

    # killed inside the film in one process (4 of 8 chunks committed), resumed on 2 ranks
    b = tmp / "B"
    orig, state = ex.FeatureExtractor.predict_step, {"batches": 0}

    def die_mid_chunk(self, batch, batch_idx=0):
        state["batches"] += 1
        if state["batches"] == 9:
            raise RuntimeError("killed")
        return orig(self, batch, batch_idx)

    monkeypatch.setattr(ex.FeatureExtractor, "predict_step", die_mid_chunk)
    with pytest.raises(RuntimeError, match="killed"):
        ex.extract(tmp / "backbone.pt", tmp / "films", b, num_workers=0, accelerator="cpu", **kw)
    monkeypatch.setattr(ex.FeatureExtractor, "predict_step", orig)
    assert len(list((b / ".partial" / "a_film").glob("c*.npz"))) == 4
    p = extract(s, b, 2, *ddp)
    check(b)
    assert events(p.stderr) == {0: 8, 1: 8 + 3}, p.stderr[-3000:]  # the film's chunks 4, 6 and 5, 7
