"""`moviessl evaluate lvu` against an independent implementation of LVU's protocol on label files
in the released format (whitespace-separated, one header, class ids with gaps, \\N class names,
like/dislike columns)."""

from __future__ import annotations

import json
import math
import pickle
import re
import zlib

import numpy as np
import pytest

from moviessl.cli import main
from moviessl.eval.lvu import evaluate_files

HEADERS = {
    "director": "class_id class_name youtube_id imdb_id",
    "writer": "class_id class_name youtube_id imdb_id",
    "like_ratio": "like_count dislike_count youtube_id imdb_id",
    "view_count": "view_count youtube_id imdb_id",
}
NCLASS = {"director": 10, "writer": 10}
NULL_NAME = "\\N"  # IMDb's null marker, writer class 0's name in the release


def _write_split(root, task, split, rows):
    p = root / "lvu_1.0" / task / f"{split}.csv"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(HEADERS[task] + "\n" + "\n".join(rows) + "\n")
    return p


@pytest.fixture()
def release(tmp_path):
    """Label files as released: director ids with gaps (no 2, 3), writer class 0 named \\N, counts."""
    rng = np.random.default_rng(1)
    ids = [f"yt{k:03d}_-x" for k in range(12)]
    files = {}
    for task in HEADERS:
        rows = []
        for k, vid in enumerate(ids):
            if task == "director":
                c = [0, 1, 4, 5, 6, 7, 8, 9][k % 8]
                rows.append(f"{c} nm00{c:05d} {vid} tt{k:07d}")
            elif task == "writer":
                c = [0, 1, 2, 5, 6, 7, 9][k % 7]
                name = NULL_NAME if c == 0 else f"nm9{c}"
                rows.append(f"{c} {name} {vid}\ttt{k:07d}")
            elif task == "like_ratio":
                rows.append(f"{rng.integers(10, 5000)} {rng.integers(1, 500)}  {vid} tt{k:07d}")
            else:
                rows.append(f"{rng.integers(100, 10**7)} {vid} tt{k:07d}")
        files[task] = _write_split(tmp_path, task, "val", rows)
    return tmp_path, ids, files


def reference_score(label_file, task, preds):
    """LVU's src/run.py evaluate(), written out independently: labels parsed as the reference loader
    (line.split(), header skipped, id = field -2), softmax sums / span means per video."""
    labels = {}
    with open(label_file) as f:
        f.readline()
        for line in f:
            items = line.split()
            if task == "view_count":
                lab = math.log(float(items[0])) - 11.76425435683139
            elif task == "like_ratio":
                lab = float(items[0]) / (float(items[0]) + float(items[1])) * 10.0 - 9.138220535629456
            else:
                lab = int(items[0])
            labels[items[-2].strip()] = lab
    correct, sq = 0, []
    for vid, spans in preds.items():
        if task in NCLASS:
            agg = None
            for s in spans:
                agg = np.array(s, dtype=np.float64) if agg is None else agg + np.array(s, dtype=np.float64)
            correct += int(agg.argmax() == labels[vid])
        else:
            sq.append((np.mean([float(s) for s in spans]) - labels[vid]) ** 2)
    return 100.0 * correct / len(preds) if task in NCLASS else float(np.mean(sq))


def _random_preds(task, ids, rng, drop=2):
    out = {}
    for vid in ids[drop:]:  # LVU videos go missing: only the others are scored
        n = int(rng.integers(1, 6))
        if task in NCLASS:
            z = rng.normal(size=(n, NCLASS[task])) * 2
            out[vid] = (np.exp(z) / np.exp(z).sum(1, keepdims=True)).tolist()
        else:
            out[vid] = rng.normal(scale=0.7, size=n).tolist()
    return out


@pytest.mark.parametrize("task", list(HEADERS))
def test_agrees_with_an_independent_implementation(release, task, tmp_path, capsys):
    root, ids, files = release
    rng = np.random.default_rng(zlib.crc32(task.encode()) % 1000)
    for trial in range(3):
        preds = _random_preds(task, ids, rng)
        pf = tmp_path / f"p{trial}.json"
        pf.write_text(json.dumps(preds))
        ours = evaluate_files(task, pf, root, "val")
        key = "top1" if task in NCLASS else "mse"
        assert ours["n"] == len(ids) - 2
        assert abs(ours[key] - reference_score(files[task], task, preds)) < 1e-6
        # the CLI prints exactly this one JSON object; data-root may be lvu_1.0 itself; pickles too
        pk = tmp_path / f"p{trial}.pkl"
        pk.write_bytes(pickle.dumps(preds))
        assert main(["evaluate", "lvu", "--task", task, "--pred", str(pk), "--data-root", str(root / "lvu_1.0")]) == 0
        assert json.loads(capsys.readouterr().out) == ours


@pytest.mark.parametrize(
    "preds, cause",
    [
        ({"not_in_split": [[0.1] * 10]}, "'not_in_split' is not in the split"),
        ({"yt000_-x": [[0.5] * 9]}, "expected 10 class probabilities"),
        ({"yt000_-x": [[float("nan")] + [0.1] * 9]}, "non-finite"),
        ({"yt000_-x": []}, "non-empty list"),
        ([[0.1] * 10], "expected a mapping"),
    ],
)
def test_bad_prediction_files_exit_2_with_one_line(release, tmp_path, capsys, preds, cause):
    root, _, _ = release
    pf = tmp_path / "bad.json"
    pf.write_text(json.dumps(preds))
    assert main(["evaluate", "lvu", "--task", "director", "--pred", str(pf), "--data-root", str(root)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and cause in err and err.startswith("moviessl: error:")


def test_regression_spans_must_be_single_numbers(release, tmp_path, capsys):
    root, ids, _ = release
    pf = tmp_path / "r.json"
    pf.write_text(json.dumps({ids[0]: [[0.1], 0.2]}))  # [x] is accepted as one number
    assert main(["evaluate", "lvu", "--task", "view_count", "--pred", str(pf), "--data-root", str(root)]) == 0
    capsys.readouterr()
    pf.write_text(json.dumps({ids[0]: [[0.1, 0.2]]}))
    assert main(["evaluate", "lvu", "--task", "like_ratio", "--pred", str(pf), "--data-root", str(root)]) == 2
    assert "expected one number" in capsys.readouterr().err
    # a malformed label file is one line too
    (root / "lvu_1.0" / "view_count" / "test.csv").write_text("view_count youtube_id imdb_id\nabc x y\n")
    assert (
        main(
            ["evaluate", "lvu", "--task", "view_count", "--pred", str(pf), "--data-root", str(root), "--split", "test"]
        )
        == 2
    )
    assert "test.csv:2" in capsys.readouterr().err


@pytest.mark.parametrize("top", [0x40, 0x80])  # MemoryError / OverflowError inside the unpickler
def test_corrupted_prediction_pickle_is_one_line(release, tmp_path, capsys, top):
    root, ids, _ = release
    data = bytearray(pickle.dumps({ids[0]: [[0.1] * 10]}, protocol=4))
    assert data[2] == pickle.FRAME[0]
    data[10] = top  # top byte of the FRAME length
    pk = tmp_path / "corrupt.pkl"
    pk.write_bytes(bytes(data))
    assert main(["evaluate", "lvu", "--task", "director", "--pred", str(pk), "--data-root", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"moviessl: error: {pk}: not a readable prediction pickle")
    assert "corrupted pickle" in err


@pytest.mark.parametrize(
    "spans",
    [
        [[0.0, 10.0] + [0.0] * 8] + [[1.0] + [0.0] * 9] * 5,  # logits: summed, class 1 would win
        [[-0.5, 1.5] + [0.0] * 8],  # sums to 1 but is no distribution
        [[0.2] * 10],  # sums to 2
        [[0.55, 0.5] + [0.0] * 8],  # sums to 1.05: past PROB_SUM_TOL (1e-2), not rounding
    ],
)
def test_span_rows_that_are_not_probabilities_are_refused(release, tmp_path, capsys, spans):
    """LVU sums softmax probabilities over a video's spans; summing logits can change the argmax."""
    root, ids, _ = release
    pf = tmp_path / "logits.json"
    pf.write_text(json.dumps({ids[0]: spans}))
    assert main(["evaluate", "lvu", "--task", "director", "--pred", str(pf), "--data-root", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"moviessl: error: {pf}: video {ids[0]!r}: span 0:")
    assert "not class probabilities" in err and "softmax" in err


def test_probabilities_within_rounding_are_accepted(release, tmp_path, capsys):
    root, ids, _ = release
    z = np.random.default_rng(0).normal(size=(3, 10))
    p = (np.exp(z) / np.exp(z).sum(1, keepdims=True)).astype(np.float32)
    rows = np.round(p.astype(np.float64), 4).tolist()  # written with 4 decimals: sums off by < 1e-3
    rows.append([1.0 + 1e-7, -1e-7] + [0.0] * 8)  # float noise of a renormalised vector
    pf = tmp_path / "p.json"
    pf.write_text(json.dumps({ids[0]: rows}))
    assert main(["evaluate", "lvu", "--task", "director", "--pred", str(pf), "--data-root", str(root)]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 1


@pytest.mark.parametrize("written", ["bfloat16", "3 decimals"])
def test_softmax_in_bfloat16_or_three_decimals_is_accepted(release, tmp_path, capsys, written):
    """A softmax computed in bfloat16 (unit roundoff 2**-8) or written with 3 decimals sums to 1 only
    within a few 1e-3; such rows were refused as logits ("apply softmax to logits")."""
    import torch

    root, ids, _ = release
    z = torch.randn(50, 10, generator=torch.Generator().manual_seed(0)) * 2
    if written == "bfloat16":
        rows = z.to(torch.bfloat16).softmax(-1).float().tolist()
    else:
        rows = np.round(z.softmax(-1).double().numpy(), 3).tolist()
    assert max(abs(sum(r) - 1) for r in rows) > 1e-3  # the case: beyond float32 rounding
    pf = tmp_path / "p.json"
    pf.write_text(json.dumps({ids[0]: rows}))
    assert main(["evaluate", "lvu", "--task", "director", "--pred", str(pf), "--data-root", str(root)]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 1


def test_a_video_listed_twice_in_a_json_file_is_refused(release, tmp_path, capsys):
    """Python's json keeps the last of two equal keys: a video whose spans were written in two
    chunks was scored on the last chunk only, silently."""
    root, ids, _ = release
    one = [0.0, 1.0] + [0.0] * 8
    pf = tmp_path / "dup.json"
    pf.write_text("{" + f'"{ids[0]}": [{one}], "{ids[1]}": [{one}], "{ids[0]}": [{one}]'.replace("'", '"') + "}")
    assert main(["evaluate", "lvu", "--task", "director", "--pred", str(pf), "--data-root", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"moviessl: error: {pf}: ")
    assert f"{ids[0]!r} is listed twice" in err


def test_out_writes_the_printed_object_as_vidsitu_does(release, tmp_path, capsys):
    """`evaluate vidsitu --out FILE` keeps its scores; `evaluate lvu` had no `--out` (argparse's
    'unrecognized arguments'), so scoring nine LVU tasks meant redirecting stdout nine times."""
    root, ids, _ = release
    pf = tmp_path / "p.json"
    pf.write_text(json.dumps(_random_preds("director", ids, np.random.default_rng(0))))
    res = tmp_path / "scores" / "director.json"
    cmd = ["evaluate", "lvu", "--task", "director", "--pred", str(pf), "--data-root", str(root), "--out"]
    assert main([*cmd, str(res)]) == 0
    assert json.loads(res.read_text()) == json.loads(capsys.readouterr().out) == evaluate_files("director", pf, root)
    assert main([*cmd, str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("moviessl: error:")


def _row(**mass):
    """A 10-class probability row with ``c<k>=p`` entries; the rest of the mass spread evenly."""
    row = np.zeros(10)
    for k, p in mass.items():
        row[int(k[1:])] = p
    rest = [k for k in range(10) if row[k] == 0]
    row[rest] = (1 - row.sum()) / len(rest)
    return row.tolist()


def test_top1_sums_the_spans_and_scores_every_class_id_by_hand(release, tmp_path):
    """The random predictions above score about one hit in ten, so an argmax blind to the last class
    passed. Here each video's outcome is fixed by hand: director labels are 0,1,4,5,6,7,8,9,0,1,4,5."""
    root, ids, _ = release
    preds = {
        ids[0]: [_row(c0=0.6)],  # hit
        ids[1]: [_row(c1=0.6)],  # hit
        ids[2]: [_row(c5=0.6)],  # label 4: miss
        ids[6]: [_row(c8=0.6)],  # hit
        ids[7]: [_row(c9=0.6)],  # hit: the last class
        # one confident wrong span, two moderate right ones: the sum (1.2 vs 0.9 + 2 * 0.3 / 9) picks
        # the label, the most confident single span would not
        ids[8]: [_row(c3=0.9), _row(c0=0.6), _row(c0=0.6)],
        # a tie between classes 4 and 7 (label 4): numpy's first index wins -> hit
        ids[10]: [_row(c4=0.4, c7=0.4)],
        ids[11]: [_row(c5=0.4, c8=0.4)],  # tie 5 / 8, label 5: hit
    }
    pf = tmp_path / "p.json"
    pf.write_text(json.dumps(preds))
    assert evaluate_files("director", pf, root) == {"top1": pytest.approx(100 * 7 / 8), "n": 8}


def test_regression_mse_is_the_mean_span_against_the_centred_label(release, tmp_path):
    """view_count's label is log(count) - 11.76425435683139 (LVU's centring); the video's prediction
    the mean of its spans, not one span, and the MSE a mean over videos."""
    root, ids, files = release
    lines = files["view_count"].read_text().split("\n")[1:3]
    lab = [math.log(float(line.split()[0])) - 11.76425435683139 for line in lines]
    preds = {ids[0]: [lab[0] - 1.0, lab[0] + 3.0], ids[1]: [lab[1] + 0.5]}  # errors 1 and 0.5
    pf = tmp_path / "p.json"
    pf.write_text(json.dumps(preds))
    assert evaluate_files("view_count", pf, root) == {"mse": pytest.approx((1.0 + 0.25) / 2), "n": 2}


@pytest.mark.parametrize(
    "task, spans, cause",
    [
        ("director", [[10**400] + [0] * 9], r"span 0: 10+\.\.\. \(401 digits\) is past a float's range"),
        ("view_count", [10**400], r"span 0: 10+\.\.\. \(401 digits\) is past a float's range"),
        ("view_count", [1e200], r"prediction 1e\+200 \(the mean of its spans\) is too far off LVU's centred scale"),
        ("like_ratio", [1e308, 1e308], r"prediction inf \(the mean of its spans\) is too far off"),
    ],
)
def test_predictions_past_a_floats_range_are_one_line(release, tmp_path, capsys, task, spans, cause):
    """JSON holds any integer: 10**400 was float()'s OverflowError traceback; a finite regression
    output of 1e200 was `** 2`'s OverflowError, and two of 1e308 a mean of inf (an MSE of null)."""
    root, ids, _ = release
    pf = tmp_path / "big.json"
    pf.write_text(json.dumps({ids[0]: spans}))
    assert main(["evaluate", "lvu", "--task", task, "--pred", str(pf), "--data-root", str(root)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("moviessl: error:")
    assert re.search(cause, err), err
    pf.write_text(json.dumps({ids[0]: [1e154], ids[1]: [1e154]}))  # each error finite, their sum not
    assert main(["evaluate", "lvu", "--task", "view_count", "--pred", str(pf), "--data-root", str(root)]) == 2
    assert "the squared errors of the predictions sum past a float's range" in capsys.readouterr().err
