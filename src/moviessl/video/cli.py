"""``moviessl probe VIDEO``: one JSON object with the video's decodable metadata."""

from __future__ import annotations

import argparse
import json


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "probe",
        help="print fps, decodable frame count, duration, size and 2-s event count of a video (JSON)",
        description="Open a video file (any FFmpeg container/codec) or a VidSitu frame folder and print one "
        "JSON object: fps, num_frames (frames that actually decode; in a frame folder, the frame files up "
        "to the last one that decodes: a damaged frame inside the clip keeps its time slot and is read as "
        "missing), duration_s, width, height, num_events (2-s events).",
    )
    p.add_argument("video", help="video file or frame folder")
    p.set_defaults(func=_run)
    return p


def _run(args) -> int:
    from .reader import probe

    print(json.dumps(probe(args.video)))
    return 0
