"""The Table 5 bookkeeping: ranks per task (direction per metric, ties), #top-1, the claims."""

import pytest

from moviessl.tasks.lvu.table import claims, ranks, setting_name


def test_ranks_follow_each_metrics_direction_and_share_ties():
    table = {
        "a": {"scene": 50.0, "like_ratio": 0.30},
        "b": {"scene": 50.0 + 1e-12, "like_ratio": 0.20},  # a float-noise tie on scene
        "c": {"scene": 20.0, "like_ratio": 0.25},
    }
    r = ranks(table, ["scene", "like_ratio"])
    assert r["a"] == {"scene": 1, "like_ratio": 3} and r["b"] == {"scene": 1, "like_ratio": 1}
    assert r["c"] == {"scene": 3, "like_ratio": 2}


def test_claims():
    tasks = ["scene", "view_count"]
    s = lambda m: {"mean": m, "se": 0.0, "n": 5}  # noqa: E731
    stats = {
        setting_name("ot", "none"): {"scene": s(40.0), "view_count": s(0.6)},
        setting_name("none", "ours"): {"scene": s(30.0), "view_count": s(0.3)},
        setting_name("none", "sup"): {"scene": s(35.0), "view_count": s(0.5)},
        setting_name("ot", "ours"): {"scene": s(45.0), "view_count": s(0.2)},
    }
    room = {"scene": {"chance": 20.0}, "view_count": {"chance": 0.5}}
    c = claims(stats, room, tasks, [tuple(k.replace("instance=", "").replace("scene=", "").split(",")) for k in stats])
    assert c["ot_beats_constant"]["tasks"] == ["scene"]  # 0.6 MSE is worse than the constant's 0.5
    assert c["otpp_best_mean_rank"]["holds"] is True
    assert c["ours_beats_sup"]["tasks_ours_better"] == ["view_count"]


def test_the_table_checks_both_configs_before_its_first_step(tmp_path, monkeypatch):
    """A GPU this machine lacks, or a typo in the OT pretraining's overrides, is one line before the
    instance extraction, the OT pretraining and the TxE pass (they came first)."""
    import torch

    from moviessl.errors import BadInputError
    from moviessl.tasks.lvu.table import run_lvu_table

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(BadInputError, match="^trainer.accelerator: gpu: torch sees no GPU"):
        run_lvu_table(tmp_path / "out", tmp_path / "none", {}, None, overrides=["trainer.accelerator=gpu"])
    with pytest.raises(BadInputError, match="^trainer.accelerator: gpu: torch sees no GPU"):
        run_lvu_table(tmp_path / "out", tmp_path / "none", {}, None, pretrain_overrides=["trainer.accelerator=gpu"])
    with pytest.raises(BadInputError, match="^trainer.precision: 'half' is not a precision"):
        run_lvu_table(tmp_path / "out", tmp_path / "none", {}, None, pretrain_overrides=["trainer.precision=half"])
    assert not (tmp_path / "out").exists()
