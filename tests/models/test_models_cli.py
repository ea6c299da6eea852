import json

import pytest

from moviessl.cli import main


def test_model_info_cli(capsys):
    assert main(["model-info", "slowd_r50"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["params"] == pytest.approx(31.67e6, rel=5e-3) and out["gmacs"] == pytest.approx(45.70, rel=5e-3)
    assert main(["model-info", "slowd_r50", "--frames", "16", "--size", "256"]) == 0
    assert json.loads(capsys.readouterr().out)["gmacs"] == pytest.approx(59.68, rel=5e-3)
    assert main(["model-info", "txe_paper"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["params"] > 20e6 and out["gmacs"] > 0
    # by default a preset's own clip: slowd_cpu reads 64² (was counted at 224², ~12x its cost)
    assert main(["model-info", "slowd_cpu"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["frames"], out["size"]) == (16, 64) and out["gmacs"] == pytest.approx(0.205, rel=0.02)


def test_model_info_unknown_preset(capsys):
    assert main(["model-info", "resnet9000"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("moviessl: error: resnet9000:") and "\n" not in err


@pytest.mark.parametrize("args", [["--tokens", "0"], ["--tokens", "-3"], ["--in-dim", "0"], ["--in-dim", "-2"]])
def test_model_info_an_empty_txe_window_is_one_line(capsys, args):
    """A window of no tokens printed 0 GMACs with exit 0; a negative one was a traceback."""
    assert main(["model-info", "txe_cpu", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("moviessl: error: ") and "window too small" in err and "\n" not in err
