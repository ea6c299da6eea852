"""Where a rank's work outside Lightning runs (``moviessl.dist``)."""

import pytest
import torch

from moviessl.dist import check_machine, gpu_ids, local_device
from moviessl.errors import BadInputError


@pytest.mark.parametrize(
    "devices, ids",
    [([2, 3], [2, 3]), ("2,3", [2, 3]), ("3,", [3]), (2, None), ("2", None), (-1, None), ("auto", None), (None, None)],
)
def test_gpu_ids_read_devices_as_lightning_does(devices, ids):
    assert gpu_ids(devices) == ids


@pytest.mark.parametrize("devices", ["[2,3]", ["a"], "2,x"])
def test_unreadable_gpu_ids_are_one_line(devices):
    with pytest.raises(BadInputError, match=r"^trainer.devices: .*give a count or a list of GPU ids"):
        gpu_ids(devices)


def test_local_device_is_the_gpu_lightning_gives_this_local_rank(monkeypatch):
    """``trainer.devices=[2,3]``: local rank 1 trains on GPU 3, so its frozen-feature cache, probe
    and scene TxE run there too (they ran on GPU 1, which the job was not given)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    for k in ("LOCAL_RANK", "SLURM_LOCALID", "JSM_NAMESPACE_LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert local_device("gpu", [2, 3]) == "cuda:3" and local_device("auto", "2,3") == "cuda:3"
    assert local_device("cuda", 2) == "cuda:1" and local_device() == "cuda:1"
    assert local_device("cpu", [2, 3]) == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert local_device("auto", [2, 3]) == "cpu"


def _no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


def test_a_gpu_asked_for_where_torch_sees_none_is_one_line(monkeypatch):
    _no_gpu(monkeypatch)
    for acc in ("gpu", "cuda"):
        with pytest.raises(BadInputError, match=rf"^trainer.accelerator: {acc}: torch sees no GPU"):
            check_machine(acc, 1)
    check_machine("auto", 1)
    check_machine("cpu", 2)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)  # Lightning's gpu is MPS on a Mac
    check_machine("gpu", 1)
    with pytest.raises(BadInputError, match="^--accelerator: cuda"):
        check_machine("cuda", 1, keys=("--accelerator", "--devices", "--precision"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    check_machine("cuda", 1)


@pytest.mark.parametrize("devices", [1, 3, "2", "auto", -1, "-1", [0], [0, 1], "0,", "1,2", 0, "abc"])
def test_a_cpu_run_takes_the_devices_lightnings_cpu_accelerator_takes(devices, monkeypatch, tmp_path):
    """Asked of Lightning itself: a CPU run's devices pass the check exactly when Lightning's CPU
    accelerator builds a trainer with them (GPU ids and -1 failed only then, after the data work)."""
    import pytorch_lightning as pl

    from moviessl.config import check_devices

    _no_gpu(monkeypatch)
    try:
        pl.Trainer(accelerator="cpu", devices=devices, logger=False, default_root_dir=tmp_path)
        lightning = True
    except Exception:
        lightning = False
    try:
        check_devices("trainer.devices", devices)
        for acc in ("cpu", "auto"):
            check_machine(acc, devices)
        ours = True
    except BadInputError as e:
        assert str(e).startswith("trainer.devices: ")
        ours = False
    assert ours == lightning


def test_gpu_ids_and_counts_beyond_the_gpus_there_are_are_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    for ok in (1, 2, "2", -1, "auto", [0, 1], "1,"):
        check_machine("gpu", ok)
        check_machine("auto", ok)
    with pytest.raises(BadInputError, match=r"^trainer.devices: \[1, 2\]: GPU id 2 does not exist; torch sees 2 GPU"):
        check_machine("cuda", [1, 2])
    with pytest.raises(BadInputError, match="^trainer.devices: 4: torch sees 2 GPU"):
        check_machine("auto", 4)
    check_machine("cpu", 4)  # CPU processes: as many as asked


def test_transformer_engine_runs_on_cuda_gpus_only(monkeypatch):
    _no_gpu(monkeypatch)
    with pytest.raises(BadInputError, match="^trainer.precision: transformer-engine runs on CUDA GPUs only"):
        check_machine("auto", 1, "transformer-engine")
    check_machine("auto", 1, "bf16-true")


def test_an_accelerator_lightning_finds_no_device_for_is_one_line(monkeypatch):
    from pytorch_lightning.accelerators import AcceleratorRegistry

    for name in ("tpu", "mps"):
        if not AcceleratorRegistry[name]["accelerator"].is_available():
            with pytest.raises(BadInputError, match=f"^trainer.accelerator: {name}: Lightning finds no such device"):
                check_machine(name, 1)
    check_machine("cpu", 1)


def test_node_rank_reads_the_launchers_node(monkeypatch):
    """Lightning's launcher started on each node sets NODE_RANK (torchrun GROUP_RANK): the job lock of
    extract is taken on node 0 only, whose first process is not alone in having rank 0 before the
    process group exists."""
    from moviessl.dist import node_rank

    for key in ("NODE_RANK", "GROUP_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert node_rank() == 0
    monkeypatch.setenv("GROUP_RANK", "2")
    assert node_rank() == 2
    monkeypatch.setenv("NODE_RANK", "1")
    assert node_rank() == 1


LAUNCH_VARS = (
    "TORCHELASTIC_RUN_ID",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "RANK",
    "SLURM_NTASKS",
    "SLURM_NTASKS_PER_NODE",
    "SLURM_PROCID",
    "SLURM_JOB_NAME",
)


def _launched(monkeypatch, **env):
    for k in LAUNCH_VARS:
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)


def test_torchrun_with_another_process_count_than_the_trainer_is_one_line(monkeypatch):
    """``torchrun --nproc-per-node=2`` with ``trainer.devices=1`` (the default) trained twice, each
    process a one-device job of its own into the same folder; with ``devices=3`` Lightning refused only
    when training began, in a traceback after the data were read. Both are one line before any work,
    in the training stages and in extraction (its flags named)."""
    from moviessl.config import TrainerConfig
    from moviessl.features.extract import check_launch
    from moviessl.training import check_trainer

    _launched(monkeypatch, TORCHELASTIC_RUN_ID="x", WORLD_SIZE="2", LOCAL_WORLD_SIZE="2", RANK="1")
    for devices in (1, 3):
        with pytest.raises(
            BadInputError,
            match=r"^trainer.devices: the launcher started 2 processes \(torchrun's WORLD_SIZE\) but "
            rf"trainer.devices={devices} x trainer.num_nodes=1 make {devices}: "
            r"give trainer.devices=2 trainer.num_nodes=1$",
        ):
            check_trainer(TrainerConfig(accelerator="cpu", devices=devices))
    refused = r"^--devices: the launcher started 2 processes .* give --devices=2 --num-nodes=1$"
    with pytest.raises(BadInputError, match=refused):
        check_launch("cpu", 1, 1, "32-true", None)
    check_trainer(TrainerConfig(accelerator="cpu", devices=2))
    check_trainer(TrainerConfig(accelerator="cpu", devices=1, num_nodes=2))
    check_launch("cpu", 2, 1, "32-true", None)


def test_srun_with_another_process_count_than_the_trainer_is_one_line(monkeypatch):
    """Two nodes of two srun tasks with ``trainer.num_nodes`` left at 1: one line naming both settings
    srun launched. One process of an sbatch script without srun sees ``SLURM_NTASKS`` too: a job
    planned as one process runs there (rank 0), while srun's ranks > 0 of it are refused; a job
    named ``interactive`` (Lightning's sign that it launches the processes itself) is not checked."""
    from moviessl.config import TrainerConfig
    from moviessl.training import check_trainer

    _launched(monkeypatch, SLURM_NTASKS="4", SLURM_NTASKS_PER_NODE="2", SLURM_PROCID="3", SLURM_JOB_NAME="cvrl")
    with pytest.raises(
        BadInputError,
        match=r"^trainer.devices: .*started 4 processes \(srun's SLURM_NTASKS\) .* "
        r"give trainer.devices=2 trainer.num_nodes=2, or start one task per device \(srun --ntasks-per-node\)$",
    ):
        check_trainer(TrainerConfig(accelerator="cpu", devices=2))
    with pytest.raises(BadInputError, match="started 4 processes"):
        check_trainer(TrainerConfig(accelerator="cpu", devices=1))
    check_trainer(TrainerConfig(accelerator="cpu", devices=2, num_nodes=2))
    # one sbatch task asking for two devices trained as one process (Lightning starts none under SLURM)
    # with the batch size and learning rate planned for two
    _launched(monkeypatch, SLURM_NTASKS="1", SLURM_PROCID="0", SLURM_JOB_NAME="cvrl")
    with pytest.raises(BadInputError, match=r"started 1 process \(srun's SLURM_NTASKS\) .* make 2: .*srun"):
        check_trainer(TrainerConfig(accelerator="cpu", devices=2))
    _launched(monkeypatch, SLURM_NTASKS="4", SLURM_NTASKS_PER_NODE="2", SLURM_JOB_NAME="cvrl")
    monkeypatch.setenv("SLURM_PROCID", "0")
    check_trainer(TrainerConfig(accelerator="cpu", devices=1))
    monkeypatch.setenv("SLURM_JOB_NAME", "interactive")
    check_trainer(TrainerConfig(accelerator="cpu", devices=2))


_RANK_KEYS = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK", "NODE_RANK", "GROUP_RANK")
_SIZE_KEYS = ("WORLD_SIZE", "SLURM_NTASKS", "JSM_NAMESPACE_SIZE")


@pytest.mark.parametrize(
    "env, speaks",
    [
        ({"RANK": "1"}, True),  # inherited from a parent shell: no launcher, a process alone
        ({"RANK": "1", "WORLD_SIZE": "1"}, True),
        ({"SLURM_PROCID": "1", "SLURM_NTASKS": "1"}, True),
        ({"LOCAL_RANK": "1"}, True),
        ({"RANK": "1", "WORLD_SIZE": "2"}, False),  # torchrun's rank 1
        ({"LOCAL_RANK": "1", "WORLD_SIZE": "2"}, False),  # Lightning's launcher's rank 1
        ({"SLURM_PROCID": "1", "SLURM_NTASKS": "4"}, False),  # srun's
        ({"JSM_NAMESPACE_RANK": "1", "JSM_NAMESPACE_SIZE": "2"}, False),  # jsrun's
        ({"RANK": "0", "WORLD_SIZE": "2"}, True),
        ({"NODE_RANK": "1"}, False),  # Lightning's launcher's first process on node 1
    ],
)
def test_a_rank_variable_without_a_launch_of_several_processes_does_not_silence_one(monkeypatch, env, speaks):
    """A plain process that inherited ``RANK=1`` (no launcher, ``WORLD_SIZE`` unset or 1) took itself
    for rank 1 and printed nothing at all."""
    from moviessl.dist import speaks_for_job

    for k in (*_RANK_KEYS, *_SIZE_KEYS):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert speaks_for_job() is speaks


@pytest.mark.parametrize("backend, expected", [("nccl", "cuda:1"), ("gloo", "cpu")])
def test_global_mean_share_without_a_device_counts_on_the_groups_own(monkeypatch, backend, expected):
    """Without ``device`` the count is reduced where the group reduces: NCCL takes device tensors only
    (a CPU one fails its all-reduce), so this process's GPU, as ``broadcast_object`` takes it; gloo
    the CPU, also under a user's default device ("meta" stands in for a GPU there). Before, the count
    was made on torch's default device. A fake group of 2 records what would be reduced; no GPU here,
    so a CUDA count is made on the CPU once its device is recorded."""
    import torch.distributed as dist

    from moviessl.dist import global_mean_share

    monkeypatch.setattr(dist, "is_available", lambda: True)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda *a, **k: 2)
    monkeypatch.setattr(dist, "get_backend", lambda *a, **k: backend)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    asked, reduced = [], []

    def all_reduce(t, *a, **k):
        reduced.append(t.device)
        t.mul_(2)  # the other process holds as many items

    real_full = torch.full

    def full(*a, device=None, **k):
        asked.append(None if device is None else torch.device(device))
        return real_full(*a, device="cpu" if asked[-1] is not None and asked[-1].type == "cuda" else device, **k)

    monkeypatch.setattr(dist, "all_reduce", all_reduce)
    torch.set_default_device("meta")
    try:
        with monkeypatch.context() as m:
            m.setattr(torch, "full", full)
            share = global_mean_share(3)
    finally:
        torch.set_default_device(None)
    assert asked == [torch.device(expected)]
    assert reduced == [torch.device("cpu")] and float(share) == 1.0


def _two_processes(monkeypatch, others: float):
    """A fake group of 2 (gloo) whose other process holds ``others`` items."""
    import torch.distributed as dist

    monkeypatch.setattr(dist, "is_available", lambda: True)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda *a, **k: 2)
    monkeypatch.setattr(dist, "get_backend", lambda *a, **k: "gloo")
    monkeypatch.setattr(dist, "all_reduce", lambda t, *a, **k: t.add_(others))


@pytest.mark.parametrize("n_local, others", [(3, 5), (0, 7), (0, 0), (2.5, 0.25), ("tensor", 4)])
def test_global_mean_share_waits_for_nothing(monkeypatch, n_local, others):
    """Under DDP the reduced count was read on the host (``.item()``) at every step of MaskPred, OT's
    distillation and the task heads, waiting for all the work queued on the GPU, and made by a blocking
    copy from the host. The share is a device tensor, of the value the host computed (1.0 where no
    process holds an item), made by a fill where it is reduced."""
    from host_reads import DEVICE, HostReads, dev
    from moviessl.dist import global_mean_share

    _two_processes(monkeypatch, others)
    hr = HostReads(monkeypatch)
    with hr.opened():
        if n_local == "tensor":  # a count made on the device (a task head's labelled items)
            n_local, share = 6, global_mean_share(dev(torch.tensor(6)), DEVICE)
        else:
            share = global_mean_share(n_local, DEVICE)
    assert hr.total() == 0, hr.report()
    n_global = float(n_local) + others
    want = float(n_local) * 2 / n_global if n_global > 0 else 1.0
    assert share.dtype == torch.float64 and share.shape == () and float(share) == want


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
def test_times_share_is_the_product_by_the_number(dtype):
    """The loss times a tensor share is bit for bit the loss times the Python number it held."""
    from moviessl.dist import times_share

    g = torch.Generator().manual_seed(0)
    for s in (1.0, 2 / 3, 10 / 7, 0.1, 1.9999):
        x = (torch.randn(64, generator=g) * 10).to(dtype)
        for v in (x, x[0].clone()):  # a batch, and a loss (shape ())
            got = times_share(v, torch.tensor(s, dtype=torch.float64))
            assert got.dtype == v.dtype and torch.equal(got, v * s), (dtype, s)
