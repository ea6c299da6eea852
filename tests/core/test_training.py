import os
import shutil
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from moviessl.errors import BadInputError
from moviessl.training import fit


class _Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 1)

    def training_step(self, batch, _):
        (x,) = batch
        return self.lin(x).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class _Logged(_Tiny):
    """A module that logs its loss every step (the curves, TensorBoard)."""

    def training_step(self, batch, i):
        loss = super().training_step(batch, i)
        self.log("train_loss", loss)
        return loss


def _loader():
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 4)), batch_size=4)


def test_simple_profiler_writes_seconds_per_hook(tmp_path):
    cfg = {"accelerator": "cpu", "max_steps": 3, "progress_bar": False, "profiler": "simple"}
    fit(_Tiny(), cfg, tmp_path, train_dataloaders=_loader(), throughput_name=None)
    report = (tmp_path / "fit-profile.txt").read_text()
    assert "training_step" in report and "backward" in report and "train_dataloader_next" in report


def test_the_training_bar_leaves_stdout_to_the_result(tmp_path, capsys):
    """Lightning draws its bar on stdout, where a command prints its result (``finetune``'s table and
    JSON line, ``pretrain-backbone``'s probe): ``moviessl finetune ... > result.json`` held every
    epoch's bar. It goes to stderr, with the commands' own bars and log lines."""
    cfg = {"accelerator": "cpu", "max_steps": 2, "progress_bar": True, "log_every_n_steps": 1}
    fit(_Tiny(), cfg, tmp_path, train_dataloaders=_loader(), throughput_name=None)
    out, err = capsys.readouterr()
    assert out == "" and "Epoch 0" in err


@pytest.mark.parametrize("limits", [{"max_steps": 3}, {"max_epochs": 2}])
def test_a_run_shorter_than_the_logging_interval_still_logs_and_plots(tmp_path, limits):
    """`moviessl pretrain-context ... trainer.max_steps=5` (a new user's smoke run; the cpu preset
    logs every 10 steps) wrote no logs/metrics.csv and no curves.png, as Lightning logs only at
    multiples of log_every_n_steps. A run shorter than two intervals logs every half run."""
    cfg = {"accelerator": "cpu", "progress_bar": False, "log_every_n_steps": 10, **limits}
    fit(_Logged(), cfg, tmp_path, train_dataloaders=_loader(), throughput_name=None, curve_keys=("train_loss",))
    from moviessl.training import read_metrics_csv

    steps = [s for s, _ in read_metrics_csv(tmp_path / "logs")["train_loss"]]
    assert len(steps) >= 2, steps
    assert (tmp_path / "curves.png").is_file()


def test_a_long_runs_logging_interval_is_its_own(tmp_path):
    cfg = {"accelerator": "cpu", "progress_bar": False, "log_every_n_steps": 3, "max_steps": 12}
    fit(_Logged(), cfg, tmp_path, train_dataloaders=_loader(), throughput_name=None)
    from moviessl.training import read_metrics_csv

    assert [s for s, _ in read_metrics_csv(tmp_path / "logs")["train_loss"]] == [2, 5, 8, 11]


def test_unknown_profiler_is_bad_input(tmp_path):
    with pytest.raises(BadInputError, match="trainer.profiler"):
        fit(
            _Tiny(),
            {"accelerator": "cpu", "max_steps": 1, "profiler": "pytorch2"},
            tmp_path,
            train_dataloaders=_loader(),
        )


@pytest.mark.parametrize("every", [0, 2])
def test_each_checkpoint_is_written_once(tmp_path, every):
    """Only ``checkpoints/`` holds checkpoints; Lightning's own per-epoch copy under logs/ is not written."""
    cfg = {"accelerator": "cpu", "max_steps": 4, "progress_bar": False, "ckpt_every_n_steps": every}
    fit(_Tiny(), cfg, tmp_path, train_dataloaders=_loader(), throughput_name=None)
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.ckpt"))
    want = ["checkpoints/last.ckpt"] + (["checkpoints/step0000004.ckpt"] if every else [])
    assert written == want


@pytest.mark.parametrize("limits", [{"max_steps": 7}, {"max_steps": -1, "max_epochs": 3}])
def test_last_checkpoint_is_the_end_of_training(tmp_path, limits):
    """A run ending between two periodic checkpoints (7 steps, every 5; 3 epochs of 2 steps, every 4)
    still leaves its final state in last.ckpt: Lightning wrote `last` at the end only if it never
    had, so the teacher, model.init and an extending --resume read an older step than model.pt."""
    cfg = {"accelerator": "cpu", "progress_bar": False, "ckpt_every_n_steps": 5 if "max_epochs" not in limits else 4}
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(4, 4)), batch_size=2)
    m = _Tiny()
    fit(m, {**cfg, **limits}, tmp_path, train_dataloaders=loader, throughput_name=None)
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert last["global_step"] == (7 if limits["max_steps"] == 7 else 6)
    assert torch.equal(last["state_dict"]["lin.weight"], m.lin.weight.detach())


@pytest.mark.parametrize("every", [0, 2])
def test_checkpoints_are_staged_beside_themselves(tmp_path, monkeypatch, every):
    """Every save goes through a temporary file in checkpoints/ (Lightning's own staged it in $TMPDIR:
    a kill left the torn file there, and across filesystems the move is a copy a kill can tear); a
    killed save's temporary file is removed when the run resumes."""
    import tempfile

    from moviessl.training import repair_last_checkpoint

    staged, real = [], tempfile.mkstemp

    def mkstemp(*a, **k):
        fd, name = real(*a, **k)
        staged.append(Path(name))
        return fd, name

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    cfg = {"accelerator": "cpu", "max_steps": 4, "progress_bar": False, "ckpt_every_n_steps": every}
    fit(_Tiny(), cfg, tmp_path / "run", train_dataloaders=_loader(), throughput_name=None)
    ck = tmp_path / "run" / "checkpoints"
    assert {p.parent for p in staged if ".ckpt." in p.name} == {ck} and not [p for p in staged if p.exists()]
    assert torch.load(ck / "last.ckpt", weights_only=False)["global_step"] == 4
    torn = ck / ".last.ckpt.x1y2.tmp"
    torn.write_bytes(b"PK\x03")
    os.utime(torn, (time.time() - 3600, time.time() - 3600))  # a killed save's, an earlier run's
    repair_last_checkpoint(tmp_path / "run")
    assert not torn.exists() and (ck / "last.ckpt").is_file()


def test_a_run_from_step_0_keeps_no_earlier_attempts_curves(tmp_path):
    """A resume keeps the interrupted part's log (metrics.part000.csv); a run that starts from step 0
    (its checkpoints gone: a restart) drops the earlier attempt's, which curves.png plotted beside it."""
    cfg = {"accelerator": "cpu", "max_steps": 4, "progress_bar": False, "ckpt_every_n_steps": 2, "log_every_n_steps": 1}
    fit(_Tiny(), {**cfg, "max_steps": 2}, tmp_path, train_dataloaders=_loader(), throughput_name=None)
    fit(_Tiny(), cfg, tmp_path, train_dataloaders=_loader(), throughput_name=None, resume=True)
    logs = tmp_path / "logs"
    assert sorted(p.name for p in logs.glob("metrics*.csv")) == ["metrics.csv", "metrics.part000.csv"]
    import shutil

    shutil.rmtree(tmp_path / "checkpoints")
    fit(_Tiny(), cfg, tmp_path, train_dataloaders=_loader(), throughput_name=None, resume=True)
    assert sorted(p.name for p in logs.glob("metrics*.csv")) == ["metrics.csv"]


class _Draws(_Tiny):
    """Records each step's batch and a random draw, as a data sampler and an augmentation would make."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def training_step(self, batch, _):
        self.seen.append((batch[0].flatten().tolist(), torch.rand(3).tolist()))
        return super().training_step(batch, _)


def test_a_resumed_run_does_not_replay_the_first_steps_random_draws(tmp_path):
    """Lightning's checkpoints keep no random state and every start seeds from the run's seed: a
    resume from step 2 drew step 0's shuffle and augmentations again. A fresh run is unchanged."""
    from moviessl.training import seed_everything

    cfg = {"accelerator": "cpu", "max_steps": 4, "progress_bar": False, "ckpt_every_n_steps": 2}
    data = torch.utils.data.TensorDataset(torch.arange(8.0).view(8, 1).expand(8, 4).contiguous())

    def run(out, max_steps, resume=False):
        seed_everything(7)
        m = _Draws()
        loader = torch.utils.data.DataLoader(data, batch_size=2, shuffle=True)
        fit(m, {**cfg, "max_steps": max_steps}, out, train_dataloaders=loader, throughput_name=None, resume=resume)
        return m.seen

    whole = run(tmp_path / "a", 4)
    assert run(tmp_path / "b", 4) == whole  # seeded: a fresh run draws the same
    first = run(tmp_path / "c", 2)
    assert first == whole[:2]
    shutil.copytree(tmp_path / "c", tmp_path / "d")
    resumed = run(tmp_path / "c", 4, resume=True)
    assert len(resumed) == 2
    assert [d for _, d in resumed] != [d for _, d in first]  # not step 0's augmentations again
    assert [b for b, _ in resumed] != [b for b, _ in first]  # nor its batches
    # the re-seed is the run's seed and the step, not a fresh one: the same checkpoint resumed twice draws alike
    assert run(tmp_path / "d", 4, resume=True) == resumed


class _Scheduled(_Tiny):
    """An optimiser and a per-step LambdaLR made from settings, as every stage's configure_optimizers."""

    def __init__(self, name="sgd", lr=0.1, wd=0.0, total=4):
        super().__init__()
        self.opt_name, self.lr, self.wd, self.total = name, lr, wd, total

    def configure_optimizers(self):
        from moviessl.optim import warmup_schedule

        make = torch.optim.SGD if self.opt_name == "sgd" else torch.optim.AdamW
        opt = make(self.parameters(), lr=self.lr, weight_decay=self.wd)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_schedule(s, self.total, 0, 0.0))
        return [opt], [{"scheduler": sched, "interval": "step"}]

    def on_train_batch_start(self, batch, i):
        g = self.trainer.optimizers[0].param_groups[0]
        self.seen = [*getattr(self, "seen", []), (g["lr"], g["weight_decay"])]


def test_a_resume_trains_with_its_own_optimiser_settings(tmp_path):
    """Lightning restored the checkpoint's learning rate, weight decay and schedule base: a resume
    with optim.lr / weight_decay changed (and a longer run) trained on with the old ones while its
    config.yaml named the new. Another optimiser is one line before any step."""
    from moviessl.config import save_config
    from moviessl.optim import warmup_schedule

    cfg = {"accelerator": "cpu", "progress_bar": False, "ckpt_every_n_steps": 2}
    fit(_Scheduled(total=4), {**cfg, "max_steps": 4}, tmp_path, train_dataloaders=_loader(), throughput_name=None)
    m = _Scheduled(lr=0.5, wd=0.3, total=8)
    fit(m, {**cfg, "max_steps": 8}, tmp_path, train_dataloaders=_loader(), throughput_name=None, resume=True)
    want = [(0.5 * warmup_schedule(s, 8, 0, 0.0), 0.3) for s in range(4, 8)]
    assert [(round(a, 6), b) for a, b in m.seen] == [(round(a, 6), b) for a, b in want]
    save_config({"optim": {"name": "sgd"}}, tmp_path)
    with pytest.raises(BadInputError, match="another optimiser"):
        fit(
            _Scheduled(name="adamw", total=12),
            {**cfg, "max_steps": 12},
            tmp_path,
            train_dataloaders=_loader(),
            throughput_name=None,
            resume=True,
            config={"optim": {"name": "adamw"}},
        )
    # the refused settings are not left as the run's config.yaml, which the message points to
    assert "sgd" in (tmp_path / "config.yaml").read_text() and not list(tmp_path.glob("config.part*.yaml"))


class _Wider(_Tiny):
    def __init__(self, width: int = 1, dropout: float = 0.0):
        super().__init__()
        self.lin = torch.nn.Sequential(torch.nn.Linear(4, width), torch.nn.Dropout(dropout))


def test_resume_into_another_network_is_one_line_of_bad_input(tmp_path, caplog):
    """A resume whose settings build other weights (another width; a preset changed since) fails with
    one line naming the checkpoint and the first mismatch, before Lightning's ``load_state_dict``
    traceback; the same weights in another structure (a dropout rate) resume with a warning."""
    cfg = {"accelerator": "cpu", "max_steps": 2, "progress_bar": False}
    run = dict(train_dataloaders=_loader(), throughput_name=None)
    fit(_Wider(1), cfg, tmp_path, **run, config={"width": 1})
    with pytest.raises(BadInputError, match=r"last\.ckpt.*lin\.0\.weight is \(1, 4\) in the checkpoint, \(3, 4\) now"):
        fit(_Wider(3), {**cfg, "max_steps": 4}, tmp_path, **run, resume=True, config={"width": 3})
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 2
    assert (tmp_path / "config.yaml").read_text() == "width: 1\n"  # the refused settings were not saved
    caplog.clear()
    fit(_Wider(1), {**cfg, "max_steps": 3}, tmp_path, **run, resume=True, config={"width": 1})
    assert not list(tmp_path.glob("config.part*"))
    assert "built differently" not in caplog.text  # the same network: no warning
    fit(
        _Wider(1, dropout=0.5),
        {**cfg, "max_steps": 4},
        tmp_path,
        train_dataloaders=_loader(),
        resume=True,
        throughput_name=None,
    )
    assert "built differently" in caplog.text and "Dropout(p=0.0" in caplog.text and "Dropout(p=0.5" in caplog.text
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 4


def test_resume_from_an_unreadable_checkpoint_is_bad_input(tmp_path):
    cfg = {"accelerator": "cpu", "max_steps": 2, "progress_bar": False}
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(BadInputError, match=r"last\.ckpt.*not a readable Lightning checkpoint"):
        fit(_Tiny(), cfg, tmp_path, train_dataloaders=_loader(), resume=True, throughput_name=None)


def test_resume_from_a_checkpoint_file_holding_none_is_bad_input(tmp_path):
    """A ``last.ckpt`` that torch loads as None (saved by another tool) is the same one line: the
    check named the error of a load that had not failed (an UnboundLocalError traceback)."""
    cfg = {"accelerator": "cpu", "max_steps": 2, "progress_bar": False}
    (tmp_path / "checkpoints").mkdir()
    torch.save(None, tmp_path / "checkpoints" / "last.ckpt")
    with pytest.raises(BadInputError, match=r"last\.ckpt.*not a readable Lightning checkpoint \(no state_dict\)"):
        fit(_Tiny(), cfg, tmp_path, train_dataloaders=_loader(), resume=True, throughput_name=None)


def test_resume_of_a_folder_without_a_run_says_so(tmp_path, caplog):
    caplog.set_level("INFO", logger="moviessl")
    cfg = {"accelerator": "cpu", "max_steps": 1, "progress_bar": False}
    fit(_Tiny(), cfg, tmp_path, train_dataloaders=_loader(), resume=True, throughput_name=None)
    assert "no checkpoint in" in caplog.text and "training from the start" in caplog.text


def test_resume_check_honours_the_modules_own_loading_hooks(tmp_path):
    """A checkpoint written before the TxE's input-statistics buffers existed loads (its
    ``_load_from_state_dict`` fills them in), so the pre-check must not refuse it."""
    from moviessl.models.txe import build_txe
    from moviessl.training import check_resumable

    txe = build_txe("txe_cpu", in_dim=8, dim=16, heads=2, mlp_dim=32, depth=1)
    old = {k: v for k, v in txe.state_dict().items() if not k.startswith("input_norm.")}
    assert len(old) < len(txe.state_dict())
    torch.save({"state_dict": old}, tmp_path / "old.ckpt")
    check_resumable(build_txe("txe_cpu", in_dim=8, dim=16, heads=2, mlp_dim=32, depth=1), tmp_path / "old.ckpt")
    torch.save({"state_dict": {**old, "extra.weight": torch.zeros(1)}}, tmp_path / "extra.ckpt")
    with pytest.raises(BadInputError, match="the checkpoint has extra.weight"):
        check_resumable(txe, tmp_path / "extra.ckpt")


def test_planned_world_size_resolves_auto_as_lightning(monkeypatch):
    """``devices: auto`` is every visible GPU when the accelerator may be one, else one process, so
    checks that need the global batch (MoDist's queue) are not skipped under the paper preset."""
    from moviessl.config import TrainerConfig
    from moviessl.training import planned_world_size

    assert planned_world_size(TrainerConfig(devices=2, num_nodes=3)) == 6
    assert planned_world_size(TrainerConfig(devices=[0, 1, 2])) == 3
    assert planned_world_size(TrainerConfig(devices="0,1")) == 2
    assert planned_world_size(TrainerConfig(devices="auto", accelerator="cpu", num_nodes=2)) == 2
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    assert planned_world_size(TrainerConfig(devices="auto", accelerator="auto", num_nodes=2)) == 16
    assert planned_world_size(TrainerConfig(devices=-1, accelerator="gpu")) == 8
    assert planned_world_size(TrainerConfig(devices="auto", accelerator="cpu")) == 1


def test_ddp_timeout_reaches_the_strategy(tmp_path):
    """``trainer.ddp_timeout_s``: the other ranks wait for rank 0 (scoring a run alone) this long; the
    find-unused form of a task stage is kept, and a strategy that is not DDP is named."""
    from datetime import timedelta

    from pytorch_lightning.strategies import DDPStrategy

    from moviessl.config import TrainerConfig
    from moviessl.training import make_trainer

    base = dict(accelerator="cpu", devices=2, progress_bar=False)
    t = make_trainer(TrainerConfig(**base, ddp_timeout_s=7200), tmp_path, find_unused_parameters=True)
    assert isinstance(t.strategy, DDPStrategy) and t.strategy._timeout == timedelta(seconds=7200)
    assert t.strategy._ddp_kwargs.get("find_unused_parameters") is True
    t = make_trainer(TrainerConfig(**base, strategy="ddp_spawn", ddp_timeout_s=60), tmp_path)
    assert t.strategy._start_method == "spawn" and t.strategy._timeout == timedelta(seconds=60)
    assert not t.strategy._ddp_kwargs.get("find_unused_parameters")
    with pytest.raises(BadInputError, match="needs a DDP strategy"):
        make_trainer(TrainerConfig(**base, strategy="fsdp", ddp_timeout_s=60), tmp_path)
    t = make_trainer(TrainerConfig(accelerator="cpu", devices=1, ddp_timeout_s=60), tmp_path)  # one process
    assert not isinstance(t.strategy, DDPStrategy)


def test_gpu_speed_switches_reach_torch(tmp_path):
    """``trainer.benchmark`` (cuDNN's autotuner) and ``trainer.matmul_precision`` (TF32 for fp32
    matmuls): off unless set, and then set for the run's process while it trains (PyTorch's flags are
    process-wide), the caller's after it."""
    from moviessl.config import TrainerConfig, load_config
    from moviessl.training import make_trainer

    before = torch.backends.cudnn.benchmark, torch.get_float32_matmul_precision()
    try:
        make_trainer(TrainerConfig(accelerator="cpu", progress_bar=False), tmp_path)
        assert (torch.backends.cudnn.benchmark, torch.get_float32_matmul_precision()) == before
        t = make_trainer(
            TrainerConfig(accelerator="cpu", progress_bar=False, benchmark=True, matmul_precision="high", max_steps=1),
            tmp_path,
            enable_checkpointing=False,
        )
        assert torch.backends.cudnn.benchmark == before[0]  # set when the run starts, not when it is built
        seen = []

        class Probe(pl.LightningModule):  # one step: the precision in force while training
            def __init__(self):
                super().__init__()
                self.w = torch.nn.Parameter(torch.ones(1))

            def training_step(self, batch, i):
                seen.append((torch.backends.cudnn.benchmark, torch.get_float32_matmul_precision()))
                return (self.w * batch[0]).sum()

            def configure_optimizers(self):
                return torch.optim.SGD(self.parameters(), lr=0.1)

        t.fit(Probe(), torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(2, 1))))
        assert seen == [(True, "high")]
        assert (torch.backends.cudnn.benchmark, torch.get_float32_matmul_precision()) == before  # the caller's again
        with pytest.raises(BadInputError, match="trainer.matmul_precision"):
            make_trainer(TrainerConfig(accelerator="cpu", matmul_precision="tf32"), tmp_path)
        with pytest.raises(BadInputError, match="trainer.matmul_precision: choose highest"):  # at load, before work
            load_config("backbone", "cpu", ["trainer.matmul_precision=tf32"])
        with pytest.raises(BadInputError, match="trainer.ddp_timeout_s: inf must be below"):
            load_config("backbone", "cpu", ["trainer.ddp_timeout_s=inf"])
    finally:
        torch.backends.cudnn.benchmark = before[0]
        torch.set_float32_matmul_precision(before[1])


def _pretrain_backbone(cfg, out):
    from moviessl.ssl.pretrain import pretrain

    return pretrain("cvrl", out / "missing.txt", out, cfg)


def _pretrain_context(cfg, out):
    from moviessl.context.pretrain import pretrain_context

    return pretrain_context([out / "missing"], out, cfg)


def _pretrain_ot(cfg, out):
    from moviessl.context.instance_masking import pretrain_ot

    return pretrain_ot(out / "missing", out, cfg)


def _vidsitu(cfg, out):
    from moviessl.tasks.vidsitu.runner import run_finetune

    return run_finetune("verb", out / "missing", features=out / "missing", out=out, cfg=cfg)


def _lvu(cfg, out):
    from moviessl.tasks.lvu.runner import run_finetune

    return run_finetune("director", out / "missing", scene_features=out / "missing", out=out, cfg=cfg)


@pytest.mark.parametrize(
    "stage, run",
    [
        ("backbone", _pretrain_backbone),
        ("context", _pretrain_context),
        ("ot_pretrain", _pretrain_ot),
        ("vidsitu", _vidsitu),
        ("lvu", _lvu),
    ],
)
def test_every_training_stage_refuses_a_gpu_torch_cannot_see_before_reading_its_data(stage, run, tmp_path, monkeypatch):
    """A job that landed on a CPU node: Lightning said so when the trainer was built, after the
    data were read and cached (a clip cache, a feature pass), with a traceback."""
    import dataclasses

    from moviessl.config import load_config

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    cfg = load_config(stage, "cpu")
    cfg = dataclasses.replace(cfg, trainer=dataclasses.replace(cfg.trainer, accelerator="gpu"))
    out = tmp_path / "run"
    out.mkdir()
    with pytest.raises(BadInputError, match="^trainer.accelerator: gpu: torch sees no GPU on this machine"):
        run(cfg, out)
    assert not list(out.iterdir())


def test_lightning_trainer_gives_lightnings_whole_reason_and_leaves_our_own_faults_alone(tmp_path, monkeypatch):
    """A machine setting Lightning refuses is one line with all of its reason (its message for too
    many devices spans two lines); an error of ours in Trainer's arguments stays a traceback."""
    from moviessl.training import lightning_trainer

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(BadInputError, match=r"^Lightning cannot run accelerator=cpu devices=\[0\]: .*int > 0"):
        lightning_trainer(accelerator="cpu", devices=[0], logger=False, default_root_dir=tmp_path)
    # Lightning's device parser on a 1-GPU machine asked for two (its message as of 2.6)
    from lightning_fabric.utilities.exceptions import MisconfigurationException

    said = "You requested gpu: [0, 1]\\n But your machine only has: [0]"
    parser = compile(
        f"def parse(**kw):\n    raise E('{said}')\n", "/x/lightning_fabric/utilities/device_parser.py", "exec"
    )
    ns = {"E": MisconfigurationException}
    exec(parser, ns)
    monkeypatch.setattr(pl, "Trainer", ns["parse"])
    with pytest.raises(BadInputError) as e:
        lightning_trainer(accelerator="cuda", devices=[0, 1])
    assert str(e.value) == (
        "Lightning cannot run accelerator=cuda devices=[0, 1]: You requested gpu: [0, 1] But your machine only has: [0]"
    )
    monkeypatch.undo()
    # and Lightning's own device parser, reached with CUDA faked: the path filter lets it through
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(BadInputError, match=r"^Lightning cannot run accelerator=cuda devices=\[0, 1\]: .*\[0, 1\]"):
        lightning_trainer(accelerator="cuda", devices=[0, 1], logger=False, default_root_dir=tmp_path)
    monkeypatch.undo()
    with pytest.raises(TypeError, match="unexpected keyword"):
        lightning_trainer(accelerator="cpu", devices=1, no_such_argument=1)


def test_a_ddp_timeout_for_a_strategy_that_takes_none_is_one_line_before_any_work():
    from moviessl.config import TrainerConfig
    from moviessl.training import check_trainer

    with pytest.raises(BadInputError, match="^trainer.ddp_timeout_s: needs a DDP strategy"):
        check_trainer(TrainerConfig(accelerator="cpu", devices=2, strategy="fsdp", ddp_timeout_s=60))
    check_trainer(TrainerConfig(accelerator="cpu", devices=2, strategy="ddp_spawn", ddp_timeout_s=60))


@pytest.mark.parametrize("stage", ["backbone", "context", "ot"])
def test_a_pretraining_folder_with_a_run_is_continued_only_with_resume(tmp_path, capsys, stage):
    """A second run into a folder that holds checkpoints is refused before any work: Lightning would
    save it as last-v1.ckpt beside the old run's last.ckpt, and a later --resume restored the old run."""
    from moviessl.cli import main
    from moviessl.context.instance_masking import pretrain_ot

    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "last.ckpt").write_bytes(b"an earlier run")
    if stage == "ot":  # the CLI opens the instances first; the refusal comes before they are read
        with pytest.raises(BadInputError, match="already holds a run; pass --resume"):
            pretrain_ot(None, out, None)
        return
    args = (
        ["pretrain-backbone", "--method", "cvrl", "--data", str(tmp_path / "list.txt")]
        if stage == "backbone"
        else ["pretrain-context", "--features", str(tmp_path / "feats")]
    )
    assert main([*args, "--out", str(out)]) == 2
    assert "already holds a run; pass --resume" in capsys.readouterr().err
    assert (out / "checkpoints" / "last.ckpt").read_bytes() == b"an earlier run" and not (out / "config.yaml").exists()


def test_ctrl_c_in_training_reaches_the_caller_as_a_keyboard_interrupt(tmp_path):
    """Lightning ends its graceful shutdown with sys.exit(1); the CLI's 'interrupted' line and exit
    code 130 need the KeyboardInterrupt, and a later Ctrl-C must still interrupt."""
    import signal

    class Pressed(_Tiny):
        def training_step(self, batch, i):
            if self.global_step == 2:
                raise KeyboardInterrupt
            return super().training_step(batch, i)

    cfg = {"accelerator": "cpu", "max_steps": 4, "progress_bar": False}
    with pytest.raises(KeyboardInterrupt):
        fit(Pressed(), cfg, tmp_path, train_dataloaders=_loader(), throughput_name=None)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with pytest.raises(SystemExit):  # any other exit is left alone
        fit(_Exits(), cfg, tmp_path / "x", train_dataloaders=_loader(), throughput_name=None)


class _Exits(_Tiny):
    def training_step(self, batch, i):
        raise SystemExit(3)


def test_a_trainer_built_in_code_without_a_limit_is_one_line(tmp_path):
    """max_epochs None becomes Lightning's -1 here: with max_steps -1 it trained forever."""
    with pytest.raises(BadInputError, match="would never end"):
        fit(_Tiny(), {"accelerator": "cpu", "max_steps": -1, "max_epochs": None}, tmp_path, train_dataloaders=_loader())


class _Counted(_Tiny):
    """Records the batches it trains on; Ctrl-C before its ``stop``-th micro-batch."""

    def __init__(self, stop: int = 0):
        super().__init__()
        self.stop, self.trained = stop, []

    def training_step(self, batch, i):
        if len(self.trained) + 1 == self.stop:
            raise KeyboardInterrupt
        self.trained.append(float(batch[0].sum()))
        return super().training_step(batch, i)


def test_a_resume_under_accumulation_writes_no_checkpoint_before_its_first_step(tmp_path):
    """Lightning's step checkpoint forgets on a resume which step it last saved: with
    accumulate_grad_batches > 1 the resumed run's first micro-batch (still at the checkpoint's step)
    wrote that step again, its loop counting the micro-batch as done while its gradient was not
    saved, so a second interruption before the next step lost that micro-batch."""
    from moviessl.loader import train_loader

    def loader():
        return train_loader(torch.utils.data.TensorDataset(torch.arange(12.0)[:, None].expand(12, 4)), 1, seed=0)

    cfg = {"accelerator": "cpu", "max_epochs": 1, "progress_bar": False, "accumulate_grad_batches": 3}
    cfg["ckpt_every_n_steps"] = 2
    runs = [_Counted(stop=8), _Counted(stop=3), _Counted()]  # step 2 ends at micro-batch 6
    for k, m in enumerate(runs):
        try:
            fit(m, cfg, tmp_path, train_dataloaders=loader(), throughput_name=None, resume=k > 0)
        except KeyboardInterrupt:
            pass
    first, _, last = (m.trained for m in runs)
    # the epoch's 12 items, each once: those of steps 1-2, then every later one in a step of the last run
    assert sorted(first[:6] + last) == [4.0 * k for k in range(12)]


def _run_as_command(monkeypatch, func) -> int:
    from test_cli import run_as_command

    return run_as_command(monkeypatch, func)


def test_sigterm_in_training_ends_the_command_as_terminated_not_as_success(tmp_path, monkeypatch, capsys):
    """Lightning turns a SIGTERM (kill, timeout, a scheduler's cancel) into SystemExit with no
    code: the command exited 0, as if it had finished, with no model and no word."""
    import os
    import signal

    steps = []

    class Termed(_Tiny):
        def training_step(self, batch, i):
            steps.append(self.global_step)
            if self.global_step == 2:
                os.kill(os.getpid(), signal.SIGTERM)
            return super().training_step(batch, i)

    cfg = {"accelerator": "cpu", "max_steps": 6, "progress_bar": False}
    before = signal.getsignal(signal.SIGTERM)
    rc = _run_as_command(monkeypatch, lambda a: fit(Termed(), cfg, tmp_path, train_dataloaders=_loader()))
    assert rc == 143 and steps[-1] < 5
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("moviessl: terminated")
    assert signal.getsignal(signal.SIGTERM) is before


def test_sigterm_in_prediction_ends_the_command_as_terminated_not_ignored(tmp_path, monkeypatch, capsys):
    """Lightning's prediction loop never looks at the SIGTERM its handler notes: an extraction
    told to stop ran on to its end and exited 0."""
    import os
    import signal

    from moviessl.training import ctrl_c_kept, lightning_trainer

    seen = []

    class Termed(_Tiny):
        def predict_step(self, batch, i):
            seen.append(i)
            if i == 0:
                os.kill(os.getpid(), signal.SIGTERM)
            return self.lin(batch[0])

    def predict(_):
        trainer = lightning_trainer(
            accelerator="cpu", logger=False, enable_progress_bar=False, default_root_dir=tmp_path
        )
        data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 4)), batch_size=1)
        with ctrl_c_kept(trainer):
            trainer.predict(Termed(), dataloaders=data, return_predictions=False)

    assert _run_as_command(monkeypatch, predict) == 143 and seen == [0]
    assert "moviessl: terminated" in capsys.readouterr().err


def test_a_process_forked_while_a_command_runs_dies_of_sigterm_at_once(monkeypatch):
    """It inherited the command's Python handler, which runs only when native code returns to
    Python (seconds into a long matmul), or, under a fit, Lightning's, which only notes the signal."""
    import os
    import signal

    def fork_and_look(_):
        child = os.fork()
        if child == 0:
            os._exit(0 if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL else 1)
        return os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])

    assert _run_as_command(monkeypatch, fork_and_look) == 0


def test_an_error_raised_while_a_sigterm_unwinds_is_still_the_termination(monkeypatch, capsys):
    """The loader workers die of the same SIGTERM, and PyTorch's SIGCHLD handler raised 'DataLoader
    worker ... is killed by signal' over the interrupt: a traceback, exit 1, instead of the line."""
    from moviessl.errors import Terminated

    def func(_):
        try:
            raise Terminated
        except Terminated:
            raise RuntimeError("DataLoader worker (pid 1) is killed by signal: Terminated.") from None

    assert _run_as_command(monkeypatch, func) == 143
    assert "moviessl: terminated" in capsys.readouterr().err

    def ctrl_c(_):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise OSError(5, "Input/output error")

    assert _run_as_command(monkeypatch, ctrl_c) == 130


def test_a_resumes_sweep_keeps_the_checkpoint_another_rank_is_writing(tmp_path):
    """Under torchrun / srun every rank runs ``repair_last_checkpoint`` as it starts, and a rank copying
    the newest ``stepN.ckpt`` over a stale ``last.ckpt`` writes it through a temporary file: a rank
    that started later swept that file as a killed save's, and the first rank's resume failed with
    "cannot write last.ckpt". A killed save's file is still swept."""
    import threading

    from moviessl.training import repair_last_checkpoint
    from moviessl.utils.io import atomic_write

    cfg = {"accelerator": "cpu", "max_steps": 4, "progress_bar": False, "ckpt_every_n_steps": 2}
    fit(_Tiny(), cfg, tmp_path, train_dataloaders=_loader(), throughput_name=None)
    ck = tmp_path / "checkpoints"
    torn = ck / ".step0000006.ckpt.k1ll3d.tmp"
    torn.write_bytes(b"PK\x03")
    os.utime(torn, (time.time() - 3600, time.time() - 3600))  # a killed save's, an earlier run's
    copying, go, failed = threading.Event(), threading.Event(), []
    data = (ck / "last.ckpt").read_bytes()

    def slow_copy(f):  # another rank's copy of a large checkpoint, half-way when this rank sweeps
        f.write(data[:100])
        copying.set()
        go.wait(10)
        f.write(data[100:])

    def other_rank():
        try:
            atomic_write(ck / "last.ckpt", slow_copy)
        except BaseException as e:
            failed.append(e)

    t = threading.Thread(target=other_rank)
    t.start()
    assert copying.wait(10)
    repair_last_checkpoint(tmp_path)
    go.set()
    t.join()
    assert not failed, failed
    assert not torn.exists()
    assert torch.load(ck / "last.ckpt", weights_only=False)["global_step"] == 4
    assert not list(ck.glob(".*.tmp"))


@pytest.mark.parametrize("how", ["moved", "killed_after_first_interval"])
def test_a_resume_writes_its_checkpoints_to_last_ckpt_not_beside_it(tmp_path, how):
    """Lightning versions ``last.ckpt`` (``last-v1.ckpt``) unless the file is the one its restored
    state names, and it restores that name only from a checkpoint of the same absolute folder written
    after a first ``last``: a run folder moved (another mount, a copy) or a run killed between its
    first step checkpoint and its first ``last`` left the resumed run's checkpoints in last-v1.ckpt,
    and last.ckpt -- what model.init, the OT teacher and the next --resume read -- at the old step."""
    cfg = {"accelerator": "cpu", "progress_bar": False, "ckpt_every_n_steps": 2}
    first = tmp_path / "a"
    fit(_Tiny(), {**cfg, "max_steps": 3}, first, train_dataloaders=_loader(), throughput_name=None)
    run = first
    if how == "moved":
        run = tmp_path / "b"
        first.rename(run)
    else:  # a kill after step0000002.ckpt, before last.ckpt: the resume repairs last.ckpt from it
        (run / "checkpoints" / "last.ckpt").unlink()
    m = _Tiny()
    fit(m, {**cfg, "max_steps": 6}, run, train_dataloaders=_loader(), throughput_name=None, resume=True)
    ck = run / "checkpoints"
    assert sorted(p.name for p in ck.glob("last*.ckpt")) == ["last.ckpt"]
    last = torch.load(ck / "last.ckpt", weights_only=False)
    assert last["global_step"] == 6 and torch.equal(last["state_dict"]["lin.weight"], m.lin.weight.detach())
    assert sorted(p.name for p in ck.glob("step*.ckpt")) == ["step0000006.ckpt"]


def test_a_resumed_runs_curves_do_not_go_back_over_the_steps_it_trained_again(tmp_path):
    """A run killed after its step-4 checkpoint had logged step 4 too; the resume trains step 4 again.
    The curves (and read_metrics_csv) go on from the resumed part's first step: both parts' values of
    the same steps made the line go back and run over them twice."""
    from moviessl.training import read_metrics_csv

    cfg = {"accelerator": "cpu", "progress_bar": False, "ckpt_every_n_steps": 2, "log_every_n_steps": 1}
    fit(_Logged(), {**cfg, "max_steps": 5}, tmp_path, train_dataloaders=_loader(), throughput_name=None)
    (tmp_path / "checkpoints" / "last.ckpt").unlink()  # the kill: step0000004.ckpt is the newest
    fit(_Logged(), {**cfg, "max_steps": 7}, tmp_path, train_dataloaders=_loader(), throughput_name=None, resume=True)
    earlier = read_metrics_csv(tmp_path / "logs" / "metrics.part000.csv")["train_loss"]
    assert [s for s, _ in earlier] == [0, 1, 2, 3, 4]
    resumed = read_metrics_csv(tmp_path / "logs" / "metrics.csv")["train_loss"]
    assert [s for s, _ in read_metrics_csv(tmp_path / "logs")["train_loss"]] == list(range(7))
    assert read_metrics_csv(tmp_path / "logs")["train_loss"] == earlier[:4] + resumed


def test_a_run_from_step_0_keeps_no_earlier_attempts_tensorboard_events(tmp_path):
    """A run that starts from step 0 beside an earlier attempt (its checkpoints gone: a task seed
    trained afresh, a restart) drops that attempt's CSV log, and now its TensorBoard events too:
    TensorBoard read both files of tb/ as one run, two runs' values at the same steps."""
    import shutil

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = {"accelerator": "cpu", "progress_bar": False, "log_every_n_steps": 1, "tensorboard": True, "max_steps": 3}
    fit(_Logged(), cfg, tmp_path, train_dataloaders=_loader(), throughput_name=None)
    shutil.rmtree(tmp_path / "checkpoints")
    fit(_Logged(), cfg, tmp_path, train_dataloaders=_loader(), throughput_name=None, resume=True)
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert [e.step for e in events.Scalars("train_loss")] == [0, 1, 2]


def _tb_hparams(tb: Path) -> tuple[list[dict], list[str], list[str]]:
    """Each hparams record of a TensorBoard run folder (its hyperparameters), the metrics they name,
    and its scalar tags, as TensorBoard reads them."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.hparams import plugin_data_pb2

    starts, metrics = [], []
    for f in sorted(tb.glob("events.out.tfevents.*")):
        for e in EventFileLoader(str(f)).Load():
            for v in e.summary.value:
                if v.metadata.plugin_data.plugin_name != "hparams":
                    continue
                data = plugin_data_pb2.HParamsPluginData.FromString(v.metadata.plugin_data.content)
                if data.HasField("session_start_info"):
                    hp = data.session_start_info.hparams
                    starts.append({k: getattr(hp[k], hp[k].WhichOneof("kind")) for k in hp})
                if data.HasField("experiment"):
                    metrics += [m.name.tag for m in data.experiment.metric_infos]
    events = EventAccumulator(str(tb))
    events.Reload()
    return starts, metrics, events.Tags()["scalars"]


def test_tensorboard_shows_the_runs_config_as_its_hyperparameters(tmp_path):
    """With ``trainer.tensorboard`` on, TensorBoard's HParams tab was empty: nothing logged the run's
    config as hyperparameters, so runs could not be told apart or compared there. The resolved config
    is now logged once per training (flattened, dotted keys), by rank 0, with the run's loss as its
    metric; a module's own saved hyperparameters add no second record and no ``hp_metric`` point."""

    class _SavesHparams(_Tiny):
        def __init__(self):
            super().__init__()
            self.save_hyperparameters({"width": 4})  # as the TxE module does

        def training_step(self, batch, i):
            loss = super().training_step(batch, i)
            self.log("train/loss", loss)
            return loss

    config = {"seed": 3, "optim": {"lr": 0.25, "betas": [0.9, 0.99], "name": "sgd"}, "init": None}
    cfg = {"accelerator": "cpu", "progress_bar": False, "log_every_n_steps": 1, "tensorboard": True, "max_steps": 2}
    fit(_SavesHparams(), cfg, tmp_path, train_dataloaders=_loader(), throughput_name=None, config=config)
    starts, metrics, scalars = _tb_hparams(tmp_path / "tb")
    want = {"seed": 3.0, "optim.lr": 0.25, "optim.betas": "[0.9, 0.99]", "optim.name": "sgd", "init": "null"}
    assert starts == [want] and metrics == ["train/loss"]
    assert "train/loss" in scalars and "hp_metric" not in scalars
    # a task seed saves its config after training: given apart as hparams; off with TensorBoard
    fit(_SavesHparams(), {**cfg, "max_steps": 3}, tmp_path / "seed", train_dataloaders=_loader(), hparams={"seed": 4})
    assert _tb_hparams(tmp_path / "seed" / "tb")[0] == [{"seed": 4.0}]
    fit(_SavesHparams(), {**cfg, "tensorboard": False}, tmp_path / "off", train_dataloaders=_loader(), config=config)
    assert not (tmp_path / "off" / "tb").exists()


def test_a_resumed_runs_tensorboard_shows_the_steps_it_trained_again_once(tmp_path):
    """A run resumed from its step-4 checkpoint after an attempt that had logged steps 4 to 6 (killed
    before its later checkpoints were kept) trains from step 4 again. TensorBoard's event reader took
    the event files of tb/ as one run: step 4 twice and the discarded steps 5 and 6 after the run's
    end, while the CSV curves went on from the resumed part. A resumed writer now starts with
    TensorBoard's restart marker at the checkpoint's step (torch's ``purge_step``): TensorBoard shows
    what the CSV curves show."""
    import shutil

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from moviessl.training import read_metrics_csv

    cfg = {"accelerator": "cpu", "progress_bar": False, "ckpt_every_n_steps": 2, "log_every_n_steps": 1}
    cfg["tensorboard"] = True
    ck = tmp_path / "checkpoints"
    fit(_Logged(), {**cfg, "max_steps": 5}, tmp_path, train_dataloaders=_loader(), throughput_name=None)
    kept = shutil.copy(ck / "step0000004.ckpt", tmp_path / "step4.ckpt")
    fit(_Logged(), {**cfg, "max_steps": 7}, tmp_path, train_dataloaders=_loader(), throughput_name=None, resume=True)
    shutil.rmtree(ck)  # the kill: its step-6 checkpoints never made it to disk
    ck.mkdir()
    shutil.move(kept, ck / "step0000004.ckpt")
    fit(_Logged(), {**cfg, "max_steps": 5}, tmp_path, train_dataloaders=_loader(), throughput_name=None, resume=True)
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    shown = [(e.step, e.value) for e in events.Scalars("train_loss")]
    curves = read_metrics_csv(tmp_path / "logs")["train_loss"]
    assert [s for s, _ in shown] == [s for s, _ in curves] == list(range(5))
    assert [v for _, v in shown] == pytest.approx([v for _, v in curves])


class _Diverges(_Tiny):
    """A loss that turns NaN at the third step: AdamW then makes every weight NaN."""

    def training_step(self, batch, i):
        loss = super().training_step(batch, i)
        loss = loss * float("nan") if self.global_step >= 2 else loss
        self.log("train/loss", loss)
        return loss


def test_a_run_whose_weights_became_nan_is_one_line_not_a_finished_model(tmp_path):
    """Lightning trains on through a NaN loss to the last step; fit returned as if the run had
    finished, and its callers exported the NaN weights (a task scored them: exit 0)."""
    cfg = {"accelerator": "cpu", "max_steps": 4, "progress_bar": False, "log_every_n_steps": 1}
    with pytest.raises(BadInputError, match=r"training diverged: 2 weight tensor\(s\) are NaN/inf after step 4"):
        fit(_Diverges(), cfg, tmp_path, train_dataloaders=_loader(), throughput_name=None)
    assert (tmp_path / "curves.png").is_file()  # the curves, which show where the loss left, are still drawn
    fit(_Tiny(), cfg, tmp_path / "fine", train_dataloaders=_loader(), throughput_name=None)  # a finite run is not


def test_a_resume_compares_a_saved_literal_interpolation_as_written(tmp_path):
    r"""config.yaml holds a literal ``${x}`` escaped (``\${x}``): compared as plain YAML, resuming
    with the same setting was refused as a change, and one changed to the text ``\${x}`` was not."""
    from moviessl.config import load_config, save_config
    from moviessl.training import refuse_changed_on_resume

    def cfg(text):
        return load_config("backbone", "cpu", overrides=[f"data.cache_dir={text}"], variant="cvrl")

    save_config(cfg(r"/tmp/a\${x}"), tmp_path)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")
    refuse_changed_on_resume(tmp_path, True, cfg(r"/tmp/a\${x}"), ("data.cache_dir",), "a test")
    with pytest.raises(BadInputError, match=r"data.cache_dir=/tmp/a\$\{x\}; a --resume cannot make it /tmp/a\\\$"):
        refuse_changed_on_resume(tmp_path, True, cfg(r"/tmp/a\\\${x}"), ("data.cache_dir",), "a test")


def test_a_diverged_runs_line_says_where_to_train_afresh(tmp_path):
    """The diverged line said "train afresh ... do not --resume", but a pretraining stage refuses a
    plain rerun into a folder holding checkpoints ("pass --resume to continue it"), and --resume
    restores the NaN weights and diverges at once: the line names the two ways out."""
    import shutil

    from moviessl.training import refuse_earlier_run

    cfg = {"accelerator": "cpu", "max_steps": 4, "progress_bar": False, "log_every_n_steps": 1}
    with pytest.raises(BadInputError) as e:
        fit(_Diverges(), cfg, tmp_path, train_dataloaders=_loader(), throughput_name=None)
    ck = tmp_path / "checkpoints"
    assert "another --out" in str(e.value) and f"after removing {ck} " in str(e.value)
    with pytest.raises(BadInputError, match="pass --resume"):
        refuse_earlier_run(tmp_path, resume=False)
    shutil.rmtree(ck)  # as the line says
    refuse_earlier_run(tmp_path, resume=False)


@pytest.mark.parametrize("plotter", ["plot_curves", "curves_plot"])
def test_a_curve_of_one_logged_step_is_drawn(tmp_path, monkeypatch, plotter):
    """A run that logged one step (a smoke run's single logging step, LogShortRuns) drew its one
    point as a line of no length, which shows nothing: curves.png and the demo's training curves had
    an empty panel, as if nothing was logged. A single point is now drawn as a marker."""
    from matplotlib.figure import Figure

    from moviessl.demo_report import curves_plot
    from moviessl.training import plot_curves

    figs = []
    real = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: figs.append(self) or real(self, *a, **k))
    logs = tmp_path / "backbone" / "cvrl" / "r0" / "logs"
    logs.mkdir(parents=True)
    (logs / "metrics.csv").write_text("step,train/loss\n4,2.5\n")
    if plotter == "plot_curves":
        assert plot_curves(logs, tmp_path / "curves.png")
    else:
        assert curves_plot(tmp_path, tmp_path / "c.png")
    (line,) = figs[0].axes[0].lines
    assert list(line.get_xdata()) == [4] and line.get_marker() not in (None, "None", "", " ")


LIGHTNING_LOGGERS = ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric")


def test_training_leaves_the_callers_warnings_and_lightning_loggers_as_they_were(tmp_path):
    """The Lightning advice moviessl silences (its log lines, a dozen warning messages) is silenced
    for the run only: a notebook that trained with ``fit`` (every stage does) then ran its own
    Lightning model heard none of Lightning's warnings, its loggers left at ERROR and the ``ignore``
    filters left in front of the caller's own."""
    import logging
    import warnings

    before = {name: logging.getLogger(name).level for name in LIGHTNING_LOGGERS}
    try:
        for name in LIGHTNING_LOGGERS:
            logging.getLogger(name).setLevel(logging.INFO)
        filters = list(warnings.filters)
        cfg = {"accelerator": "cpu", "max_steps": 2, "progress_bar": False}
        fit(_Tiny(), cfg, tmp_path, train_dataloaders=_loader(), throughput_name=None)
        assert {name: logging.getLogger(name).level for name in LIGHTNING_LOGGERS} == dict.fromkeys(
            LIGHTNING_LOGGERS, logging.INFO
        )
        assert warnings.filters == filters
    finally:
        for name, level in before.items():
            logging.getLogger(name).setLevel(level)


class _Flags(_Tiny):
    """Records the GPU speed switches in force while it trains; fails at its first step if told to."""

    def __init__(self, fail=False):
        super().__init__()
        self.fail, self.seen = fail, []

    def training_step(self, batch, i):
        self.seen.append((torch.backends.cudnn.benchmark, torch.get_float32_matmul_precision()))
        if self.fail:
            raise BadInputError("some.file", "unreadable")
        return super().training_step(batch, i)


def test_gpu_speed_switches_are_the_runs_and_the_caller_gets_its_own_back(tmp_path):
    """``trainer.benchmark`` and ``trainer.matmul_precision`` are process-wide torch flags: set for the
    run, then the caller's again, after a run that ends and after one that fails. cuDNN's autotuner
    stayed on after any run that asked for it (Lightning sets it when the trainer is built), and a run
    that failed kept its matmul precision (Lightning calls no callback's ``teardown`` then)."""
    before = torch.backends.cudnn.benchmark, torch.get_float32_matmul_precision()
    cfg = {"accelerator": "cpu", "max_steps": 1, "progress_bar": False, "benchmark": True, "matmul_precision": "high"}
    try:
        torch.backends.cudnn.benchmark = False
        torch.set_float32_matmul_precision("highest")
        m = _Flags()
        fit(m, cfg, tmp_path / "a", train_dataloaders=_loader(), throughput_name=None)
        assert m.seen[0] == (True, "high")
        assert (torch.backends.cudnn.benchmark, torch.get_float32_matmul_precision()) == (False, "highest")
        m = _Flags(fail=True)
        with pytest.raises(BadInputError, match="unreadable"):
            fit(m, cfg, tmp_path / "b", train_dataloaders=_loader(), throughput_name=None)
        assert m.seen == [(True, "high")]
        assert (torch.backends.cudnn.benchmark, torch.get_float32_matmul_precision()) == (False, "highest")
    finally:
        torch.backends.cudnn.benchmark = before[0]
        torch.set_float32_matmul_precision(before[1])


def test_ctrl_c_in_training_gives_the_callers_own_sigint_handler_back(tmp_path):
    """Lightning ignores SIGINT once a KeyboardInterrupt reaches it; the handler put back after it is
    the one the caller had (a script's own, which cleans up and raises), not Python's default."""
    import signal

    class Pressed(_Tiny):
        def training_step(self, batch, i):
            raise KeyboardInterrupt

    def own(signum, frame):
        raise KeyboardInterrupt

    before = signal.signal(signal.SIGINT, own)
    try:
        cfg = {"accelerator": "cpu", "max_steps": 2, "progress_bar": False}
        with pytest.raises(KeyboardInterrupt):
            fit(Pressed(), cfg, tmp_path, train_dataloaders=_loader(), throughput_name=None)
        assert signal.getsignal(signal.SIGINT) is own
    finally:
        signal.signal(signal.SIGINT, before)


def test_a_logged_host_number_is_a_host_tensor_whatever_the_default_device():
    """``host_scalar`` logs a number as a tensor on the host; made on torch's default device, under a
    user's ``torch.set_default_device("cuda")`` it was a GPU tensor made by a blocking copy, the wait
    it is there to avoid."""
    from default_device import gpu_like_default_device
    from moviessl.training import host_scalar

    with gpu_like_default_device():
        t = host_scalar(0.25)
    assert t.device.type == "cpu" and t.item() == 0.25
