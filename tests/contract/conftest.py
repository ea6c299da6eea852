"""Shared inputs for the bad-input contract tests: tiny but real clips, checkpoints, features and a
VidSitu release, built once per session."""

from __future__ import annotations

import errno
import importlib.util
import sys
from fnmatch import fnmatch
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

TESTS = Path(__file__).resolve().parents[1]


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


ssl_util = _load("contract_ssl_testutil", TESTS / "ssl" / "ssl_testutil.py")
vidsitu_util = _load("contract_vidsitu", TESTS / "tasks" / "conftest.py")

INPUT = {"num_frames": 4, "stride": 8, "short_side": 32, "crop": 32}
BB_KW = dict(preset="slowd_cpu", widths=[8, 8, 16, 16], stem_width=8)


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> SimpleNamespace:
    from moviessl.checkpoint import arch_spec, save_checkpoint
    from moviessl.models import build_slowd, build_txe
    from moviessl.video.filmgen import make_film

    root = tmp_path_factory.mktemp("contract_world")
    torch.manual_seed(0)
    bb = build_slowd(**BB_KW)
    backbone = save_checkpoint(
        root / "backbone.pt",
        stage="backbone",
        arch=arch_spec("moviessl.models.slowd:build_slowd", **BB_KW),
        state_dict=bb.state_dict(),
        meta={"input": INPUT, "method": "random", "out_dim": bb.out_dim},
    )
    tkw = dict(preset="txe_cpu", in_dim=32, dim=32, heads=2, mlp_dim=64, depth=1)
    context = save_checkpoint(
        root / "txe.pt",
        stage="context",
        arch=arch_spec("moviessl.models.txe:build_txe", **tkw),
        state_dict=build_txe(**tkw).state_dict(),
        meta={"window": 5, "token_stride_s": 2.0, "in_dim": 32, "loss": "infonce", "mask_sizes": [1, 2, 3]},
    )
    videos = root / "videos"
    videos.mkdir()
    make_film(videos / "a.mp4", 4.0, width=64, height=48, audio=False)
    make_film(videos / "b.mp4", 4.0, width=64, height=48, audio=False, seed=1)
    clips = ssl_util.make_clip_list(root / "clips", n=8, bad=1)
    ann, feats = vidsitu_util.make_vidsitu(root / "vidsitu")
    return SimpleNamespace(
        root=root, backbone=backbone, context=context, videos=videos, clips=clips, ann=ann, feats=feats
    )


class _FullDisk:
    """A file that takes ``budget`` bytes and then fails like a full disk (ENOSPC)."""

    def __init__(self, f, budget: int):
        self._f, self._left = f, budget

    def write(self, b) -> int:
        b = bytes(b)
        if len(b) > self._left:
            self._f.write(b[: self._left])
            self._left = 0
            raise OSError(errno.ENOSPC, "No space left on device")
        self._left -= len(b)
        return self._f.write(b)

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()


@pytest.fixture
def disk_full(monkeypatch):
    """``disk_full("model.pt")``: writes of files matching the pattern fail with ENOSPC part-way."""
    import moviessl.utils.io as uio

    orig = uio._open_fd

    def arm(pattern: str, budget: int = 64):
        def fake(fd, mode, path):
            f = orig(fd, mode, path)
            return _FullDisk(f, budget) if fnmatch(Path(path).name, pattern) else f

        monkeypatch.setattr(uio, "_open_fd", fake)

    return arm
