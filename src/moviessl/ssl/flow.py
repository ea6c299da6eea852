"""Optical flow for MoDist's motion pathway, computed once per video and cached.

Estimator: OpenCV DIS (``cv2.DISOpticalFlow``, default) or Farneback. TV-L1 (opencv-contrib) is
~50x slower on CPU and RAFT needs a GPU and weights; MoDist's estimator is unconfirmed, and the
flow only has to carry *where and how things move* for distillation, which DIS does well.

Flow frame ``i`` is the flow from frame ``i`` to ``i+1`` (the last one repeats ``T-2``), so flow
frames index like video frames and a 16x4 flow clip covers the same time as its RGB clip.

3-channel uint8 encoding (like the flow JPEGs MoDist trains on)::

    b   = bound * short_side / 256                 # +-20 px at a 256 short side (TSN's clip), scaled
    ch0 = 127.5 * (1 + clip(dx / b, -1, 1))         # horizontal flow, 128 = still
    ch1 = 127.5 * (1 + clip(dy / b, -1, 1))         # vertical flow
    ch2 = 255 * clip(sqrt(dx^2 + dy^2) / b, 0, 1)   # magnitude

``mode: edges`` replaces the three channels by their Sobel gradient magnitudes (MoDist's unconfirmed
"flow edges", which suppress smooth camera motion); default ``raw``. The flow network sees
``(v / 255 - 0.5) / 0.25`` per channel (:func:`normalize_flow`, ``centred``) or, as MaCLR's release
(``DATA.MEAN`` 0, ``DATA.STD`` 1 for its flow images), ``v / 255`` (``maclr``).

Cache (versioned by every parameter above): ``cache_dir/flow_{algorithm}_s{short}_{mode}[_png|_jpeg{quality}]_{hash}/
{stem}-{key}.npy`` + ``.json``, written atomically, memory-mapped afterwards. ``store`` says how:

- ``npy``: the uint8 ``(T, H, W, 3)`` array (~20 MB per 10-s clip at short side 128: TB for K400);
- ``png``: each channel of each frame a grayscale PNG (lossless: the same values as ``npy``);
- ``jpeg``: each channel of each frame a grayscale JPEG at ``jpeg_quality``, as the flow images of
  TSN's ``dense_flow`` tool (Wang et al., ECCV 2016) that MaCLR / MoDist-style pipelines train on:
  lossy, an order of magnitude smaller.

For ``png`` / ``jpeg`` the ``.npy`` holds a table of offsets and the images' bytes end to end
(uint8, 1-D, :func:`write_flow`); a clip read decodes only its frames. A video's flow is computed and
written ``FLOW_CHUNK`` frames at a time.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator

import numpy as np
import torch

from ..errors import BadInputError, raise_if_denied
from ..utils.io import atomic_write_from, atomic_write_json, npy_header, write_npy_chunks
from .clipcache import CachedSource, _memmap, cache_base, resize_frames

FLOW_VERSION = 1
FLOW_STORES = ("npy", "png", "jpeg")
FLOW_ALGORITHMS = ("dis", "farneback")
FLOW_MODES = ("raw", "edges")
DIS_PRESETS = ("ultrafast", "fast", "medium")


@dataclass(frozen=True)
class FlowParams:
    algorithm: str = "dis"  # dis | farneback
    short_side: int = 64  # flow is computed (and stored) at this short side
    bound: float = 20.0  # px at a 256 short side
    mode: str = "raw"  # raw | edges
    dis_preset: str = "fast"  # ultrafast | fast | medium
    store: str = "npy"  # npy | png | jpeg (module docstring)
    jpeg_quality: int = 95  # dense_flow's (OpenCV's default); only for store: jpeg

    def __post_init__(self):
        # here, not when the first flow is computed: there the error was that video's, so a misspelt
        # setting skipped every video of the list as bad after opening each one
        for key, value, allowed in (
            ("algorithm", self.algorithm, FLOW_ALGORITHMS),
            ("mode", self.mode, FLOW_MODES),
            ("dis_preset", self.dis_preset, DIS_PRESETS),
        ):
            if value not in allowed:
                raise BadInputError(f"flow.{key}", f"must be one of {' | '.join(allowed)}, got {value!r}")
        if self.store not in FLOW_STORES:
            raise BadInputError("flow.store", f"must be one of {' | '.join(FLOW_STORES)}, got {self.store!r}")
        if self.store == "jpeg" and not 1 <= self.jpeg_quality <= 100:
            raise BadInputError("flow.jpeg_quality", f"must be in 1..100, got {self.jpeg_quality}")

    def tag(self) -> str:
        # what the stored values depend on; an npy cache keeps the folder it had before stores existed
        d = {k: v for k, v in asdict(self).items() if k not in ("store", "jpeg_quality")}
        store = ""
        if self.store != "npy":
            d["store"], store = self.store, f"_{self.store}"
        if self.store == "jpeg":
            d["jpeg_quality"], store = self.jpeg_quality, f"_jpeg{self.jpeg_quality}"
        h = hashlib.sha1(json.dumps({**d, "v": FLOW_VERSION}, sort_keys=True).encode()).hexdigest()[:8]
        return f"flow_{self.algorithm}_s{self.short_side}_{self.mode}{store}_{h}"


def _estimator(p: FlowParams) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    import cv2

    if p.algorithm == "dis":
        presets = {
            "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
            "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
            "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
        }
        if p.dis_preset not in presets:
            raise BadInputError("flow.dis_preset", f"unknown DIS preset {p.dis_preset!r} ({'|'.join(presets)})")
        dis = cv2.DISOpticalFlow_create(presets[p.dis_preset])
        return lambda a, b: dis.calc(a, b, None)
    if p.algorithm == "farneback":
        return lambda a, b: cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 9, 3, 5, 1.1, 0)
    raise BadInputError("flow.algorithm", f"unknown flow algorithm {p.algorithm!r} (dis|farneback)")


def encode_flow(flow: np.ndarray, p: FlowParams) -> np.ndarray:
    """(H,W,2) float flow in px -> (H,W,3) uint8 (see module docstring)."""
    b = p.bound * p.short_side / 256.0
    dx, dy = flow[..., 0] / b, flow[..., 1] / b
    chans = [dx, dy, np.sqrt(dx * dx + dy * dy)]
    if p.mode == "edges":
        import cv2

        # gradient of each flow channel per pixel; a uniform (camera) translation has none
        chans = [
            np.sqrt(cv2.Sobel(c, cv2.CV_32F, 1, 0, ksize=3) ** 2 + cv2.Sobel(c, cv2.CV_32F, 0, 1, ksize=3) ** 2)
            for c in (dx.astype(np.float32), dy.astype(np.float32))
        ]
        chans.append(np.sqrt(chans[0] ** 2 + chans[1] ** 2))
        return np.stack([np.clip(c, 0, 1) * 255 for c in chans], -1).round().astype(np.uint8)
    if p.mode != "raw":
        raise BadInputError("flow.mode", f"unknown flow mode {p.mode!r} (raw|edges)")
    out = np.stack(
        [127.5 * (1 + np.clip(chans[0], -1, 1)), 127.5 * (1 + np.clip(chans[1], -1, 1)), 255 * np.clip(chans[2], 0, 1)],
        -1,
    )
    return out.round().astype(np.uint8)


# Frames decoded (and their flow computed and written) at a time: a feature-length film's frames and
# flow never sit in RAM whole (2 h at 256 px would be ~75 GB of frames). Small, because a chunk is
# decoded at the film's own size and the reader keeps the previous one, and a reader decoding in
# order pays nothing per chunk; fewer for large frames (``clipcache.CHUNK_BYTES``).
FLOW_CHUNK = 32


class ArrayFrames:
    """An in-memory ``(T, H, W, 3)`` array as a frame source (``num_frames``, ``get(indices)``)."""

    def __init__(self, frames: np.ndarray):
        self.frames, self.num_frames = frames, len(frames)

    def get(self, indices) -> np.ndarray:
        return self.frames[np.asarray(indices, dtype=np.int64)]


def iter_flow(frames, p: FlowParams, chunk: int | None = None) -> Iterator[np.ndarray]:
    """Encoded flow uint8 ``(n, H, W, 3)`` of a frame source (``num_frames``, ``get(indices)``, or
    ``chunks(size)`` where it has one: :class:`~moviessl.ssl.clipcache.LiveSource`; RGB uint8, resized
    to ``p.short_side`` when it is not), in order, ``chunk`` (:data:`FLOW_CHUNK`) frames decoded at a
    time. Flow frame ``i`` is ``i -> i+1``; the last repeats the one before (a single frame: no motion)."""
    import cv2

    n_frames, chunk = int(frames.num_frames), int(chunk or FLOW_CHUNK)
    if n_frames <= 0:
        raise ValueError("no frames")
    est = _estimator(p)
    if hasattr(frames, "chunks"):  # decoded in order by one reader (LiveSource)
        pieces = frames.chunks(chunk)
    else:
        pieces = (frames.get(np.arange(a, min(a + chunk, n_frames))) for a in range(0, n_frames, chunk))
    prev = last = None  # the previous chunk's last gray frame; the last flow frame yielded
    for fr in pieces:
        fr = np.asarray(fr)
        if len(fr) == 0:  # a source's empty chunk (one that pads its last read): nothing to pair
            continue
        if min(fr.shape[1:3]) != p.short_side:
            fr = resize_frames(fr, p.short_side)
        gray = [cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in fr]
        seq = ([prev] if prev is not None else []) + gray
        if len(seq) > 1:
            out = np.stack([encode_flow(est(seq[i], seq[i + 1]), p) for i in range(len(seq) - 1)])
            last = out[-1]
            yield out
        prev = gray[-1]
    if prev is None:
        raise ValueError(f"no frames: the source reported {n_frames} but gave none")
    if last is None:
        last = encode_flow(np.zeros(prev.shape[:2] + (2,), np.float32), p)
    yield last[None]


def compute_flow(frames: np.ndarray, p: FlowParams) -> np.ndarray:
    """RGB uint8 (T,H,W,3) at ``p.short_side`` -> encoded flow uint8 (T,H,W,3)."""
    if len(frames) == 0:
        raise ValueError("no frames")
    return np.concatenate(list(iter_flow(ArrayFrames(frames), p)))


def write_flow(f: BinaryIO, chunks: Iterable[np.ndarray], n_frames: int, p: FlowParams) -> tuple[int, int]:
    """Write the flow ``chunks`` (``n_frames`` in all) as one ``.npy`` to the seekable file ``f``, as it
    comes; returns the frame size. ``npy``: the uint8 ``(T, H, W, 3)`` array. ``png`` / ``jpeg``: a 1-D
    uint8 array holding a table of ``3T + 1`` little-endian int64 offsets, then one grayscale image per
    channel and frame, frame-major; image ``k = 3 t + c`` is ``a[offset[k]:offset[k + 1]]``. The table
    lives in the file, not in RAM: a loader worker keeps a source per video it has read (K400: 240k)."""
    import cv2

    if p.store == "npy":
        return write_npy_chunks(f, chunks, n_frames)[:2]
    if p.store == "png":
        ext, opts = ".png", [cv2.IMWRITE_PNG_COMPRESSION, 3]
    else:
        ext, opts = ".jpg", [cv2.IMWRITE_JPEG_QUALITY, p.jpeg_quality]
    header = npy_header((0,))
    offsets = np.zeros(3 * n_frames + 1, "<i8")
    f.write(header)
    f.write(offsets.tobytes())  # filled in at the end
    offsets[0] = pos = offsets.nbytes
    size, done = None, 0
    for chunk in chunks:
        size = size or (int(chunk.shape[1]), int(chunk.shape[2]))
        if done + len(chunk) > n_frames or chunk.shape[1:] != (*size, 3):
            raise ValueError(f"a flow chunk of shape {chunk.shape} after {done} of {n_frames} frames of {size}")
        for t in range(len(chunk)):
            for c in range(3):
                ok, buf = cv2.imencode(ext, np.ascontiguousarray(chunk[t, :, :, c]), opts)
                if not ok:
                    raise RuntimeError(f"OpenCV could not encode flow frame {done + t} as {p.store}")
                f.write(buf.tobytes())
                pos += len(buf)
                offsets[3 * (done + t) + c + 1] = pos
        done += len(chunk)
    if done != n_frames or size is None:
        raise ValueError(f"flow of {done} frames, {n_frames} announced")
    f.seek(len(header))
    f.write(offsets.tobytes())
    final = npy_header((int(pos),))
    if len(final) != len(header):  # numpy pads the header to 64 bytes: a length's digits never spill
        raise RuntimeError("npy header grew")
    f.seek(0)
    f.write(final)
    f.seek(0, 2)
    return size


class EncodedFlowSource:
    """One video's flow stored as images (``store`` png | jpeg, :func:`write_flow`); the
    :class:`CachedSource` interface."""

    def __init__(self, npy: Path, meta: dict):
        self.npy, self.meta = npy, meta
        self.fps, self.num_frames = float(meta.get("fps") or 0.0), int(meta["num_frames"])
        self.path = Path(meta["src"])
        self.height, self.width = int(meta["height"]), int(meta["width"])

    def get(self, indices) -> np.ndarray:
        import cv2

        data = _memmap(str(self.npy))
        idx = np.asarray(indices, dtype=np.int64)
        out = np.empty((len(idx), self.height, self.width, 3), np.uint8)
        for j, t in enumerate(idx.tolist()):
            for c in range(3):
                k = 3 * t + c
                img = None
                if 8 * (k + 2) <= len(data):
                    a, b = np.frombuffer(data[8 * k : 8 * (k + 2)].tobytes(), "<i8").tolist()
                    if 0 <= a < b <= len(data):
                        img = cv2.imdecode(np.asarray(data[a:b]), cv2.IMREAD_GRAYSCALE)
                if img is None or img.shape != (self.height, self.width):
                    raise BadInputError(self.npy, f"cached flow image {k} (frame {t}) is unreadable; delete the file")
                out[j, :, :, c] = img
        return out

    def all(self) -> np.ndarray:
        return self.get(np.arange(self.num_frames))


FLOW_INPUTS = ("centred", "maclr")


def normalize_flow(x: torch.Tensor, mode: str = "centred") -> torch.Tensor:
    """uint8-valued flow (any layout) -> float input of the flow net: ``centred`` roughly zero-mean and
    unit-scale, ``maclr`` ``v / 255`` in [0, 1] (MaCLR's mean 0 / std 1 normalisation of flow images)."""
    if mode == "maclr":
        return x.float() / 255.0
    if mode != "centred":
        raise ValueError(f"unknown flow input {mode!r} ({' | '.join(FLOW_INPUTS)})")
    return (x.float() / 255.0 - 0.5) / 0.25


class FlowCache:
    """``FlowCache(cache_dir, params).source(path, frames)`` -> the video's encoded flow, memory-mapped.

    ``frames`` (a frame source, or a callable returning the frames) is read only when the flow of that
    video (for these parameters) is not cached yet (:meth:`source`)."""

    def __init__(self, cache_dir: str | os.PathLike, params: FlowParams):
        self.params = params
        self.dir = Path(cache_dir) / params.tag()
        self.anchor = Path(cache_dir).resolve().parent  # videos under it are keyed by their place there
        self.computed = 0  # how many videos this instance had to compute (cache misses)

    def is_cached(self, path: str | os.PathLike) -> bool:
        """Whether ``path``'s flow (for these parameters) is in the cache: two stats, no decoding."""
        path = Path(path)
        try:
            base = cache_base(self.dir, path, self.anchor, (".json",))
        except OSError:
            return False
        return base.with_suffix(".npy").is_file() and base.with_suffix(".json").is_file()

    def source(self, path: str | os.PathLike, frames) -> CachedSource | EncodedFlowSource:
        """The flow of ``path``, computed from ``frames`` when it is not cached: a frame source
        (``num_frames``, ``get(indices)``, read :data:`FLOW_CHUNK` frames at a time) or a callable
        returning the ``(T, H, W, 3)`` array (called only then)."""
        path = Path(path)
        if not path.exists():
            raise_if_denied(path)
            raise BadInputError(path, "video not found")
        base = cache_base(self.dir, path, self.anchor, (".json",))
        npy, meta_p = base.with_suffix(".npy"), base.with_suffix(".json")
        if npy.is_file() and meta_p.is_file():
            return self._open(npy, json.loads(meta_p.read_text()))
        if callable(frames):
            frames = ArrayFrames(np.asarray(frames()))
        n = int(frames.num_frames)
        try:
            size = atomic_write_from(npy, iter_flow(frames, self.params), lambda f, c: write_flow(f, c, n, self.params))
        except BadInputError:
            raise
        except Exception as e:  # a decoder or OpenCV failure on this video: it is skipped as bad, not the job
            if isinstance(e, OSError) and e.filename == str(npy):  # writing the cache (a full disk)
                raise
            raise BadInputError(path, f"cannot compute its flow ({type(e).__name__}: {e})") from None
        meta = {"src": str(path.resolve()), "num_frames": n, "fps": None, "params": asdict(self.params)}
        if self.params.store != "npy":
            meta["height"], meta["width"] = size
        atomic_write_json(meta_p, meta)  # last: the entry exists once its meta does
        self.computed += 1
        return self._open(npy, meta)

    def _open(self, npy: Path, meta: dict):
        return CachedSource(npy, meta) if self.params.store == "npy" else EncodedFlowSource(npy, meta)
