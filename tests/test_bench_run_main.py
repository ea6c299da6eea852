"""benchmarks.run_main: a benchmark's bad input is one line and exit code 2, as with `moviessl`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from benchmarks import run_main

from moviessl.errors import BadInputError

ROOT = Path(__file__).resolve().parents[1]


def _raise(e: BaseException):
    def main():
        raise e

    return main


@pytest.mark.parametrize(
    "error,line",
    [
        (BadInputError("runs/x/features", "no _feats.npy files"), "runs/x/features: no _feats.npy files"),
        (FileNotFoundError(2, "No such file or directory", "/no/such"), "/no/such: No such file or directory"),
        (SystemExit("runs/x: not a demo output folder\n(see --help)"), "runs/x: not a demo output folder (see --help)"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(error, line, capsys):
    with pytest.raises(SystemExit) as e:
        run_main(_raise(error), "benchmarks.x")
    assert e.value.code == 2
    assert capsys.readouterr().err == f"benchmarks.x: error: {line}\n"


@pytest.mark.parametrize("returned,code", [(0, 0), (3, 3), ({"a": 1}, 0), (None, 0), (True, 0)])
def test_what_main_returns_is_the_exit_code_when_it_is_an_int(returned, code, capsys):
    with pytest.raises(SystemExit) as e:
        run_main(lambda: returned, "benchmarks.x")
    assert e.value.code == code and capsys.readouterr().err == ""


def test_argparse_exits_and_other_errors_pass_through():
    with pytest.raises(SystemExit) as e:  # argparse's own usage error: its code, its message
        run_main(_raise(SystemExit(2)), "benchmarks.x")
    assert e.value.code == 2
    with pytest.raises(ZeroDivisionError):  # a bug stays a traceback
        run_main(_raise(ZeroDivisionError("x")), "benchmarks.x")


def test_every_benchmark_runs_its_main_through_run_main():
    """run_all keeps its own exit code (1: a benchmark failed, recorded in its JSON)."""
    missing = []
    for p in sorted((ROOT / "benchmarks").glob("*.py")):
        src = p.read_text()
        if 'if __name__ == "__main__":' in src and p.stem != "run_all":
            block = src.split('if __name__ == "__main__":', 1)[1]
            if "run_main(" not in block or f'"benchmarks.{p.stem}"' not in block:
                missing.append(p.stem)
    assert not missing


def test_a_benchmark_on_a_missing_folder_is_one_line():
    r = subprocess.run(
        [sys.executable, "-m", "benchmarks.txe_layer_probe", "/no/such/vidsitu", "/no/such/f", "/no/such/txe"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "benchmarks.txe_layer_probe: error: /no/such/vidsitu/ground_truth.json: No such file or directory"
    ]
