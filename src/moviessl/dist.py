"""Cross-process helpers so contrastive losses see the *global* batch.

Under DDP each process holds B local embeddings. Contrastive negatives (CVRL's InfoNCE) and the
keys pushed into FIFO queues (MoDist, MaskPred) must be the same set whatever the number of
processes, so they are all-gathered. :func:`gather_with_grad` keeps the autograd graph (the
backward of an all-gather sums the incoming gradients and hands each process its slice), so that
with DDP's gradient averaging the result equals one process on the concatenated batch.
Without an initialised process group both functions are the identity.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import torch
import torch.distributed as dist

from .errors import BadInputError


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def end_process_group() -> None:
    """A process of a multi-process run (torchrun, srun, Lightning's own launch) that finished its
    work ends the process group itself. Left to the interpreter's exit, gloo's worker threads still
    held work whose tensors were freed during finalisation, and the process died of SIGABRT
    ('terminate called without an active exception') now and then, failing a finished job under
    torchrun (the crash pytorch/pytorch#179291 describes). Call it only after work that finished: a
    failed rank's peers may still be inside a collective, where NCCL's teardown can hang."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def rank() -> int:
    return dist.get_rank() if is_dist() else 0


def local_rank() -> int:
    """This process's rank on its node from the launcher's environment (torchrun and Lightning's own
    launcher set ``LOCAL_RANK``, SLURM's srun ``SLURM_LOCALID``, LSF's jsrun ``JSM_NAMESPACE_LOCAL_RANK``)."""
    for key in ("LOCAL_RANK", "SLURM_LOCALID", "JSM_NAMESPACE_LOCAL_RANK"):
        v = os.environ.get(key, "").strip()
        if v.isdigit():
            return int(v)
    return 0


def node_rank() -> int:
    """This node's rank from the launcher's environment (Lightning's launcher ``NODE_RANK``, torchrun
    ``GROUP_RANK``); 0 for a single node."""
    for key in ("NODE_RANK", "GROUP_RANK"):
        v = os.environ.get(key, "").strip()
        if v.isdigit():
            return int(v)
    return 0


def job_leader() -> bool:
    """Whether this process does a job's one-off file steps before the process group exists (the
    folder lock, its claim, clearing a killed run's leftovers, an index rewrite with nothing to do):
    Lightning's rank 0 on node 0. Lightning's launcher started on each node gives every node's first
    process rank 0 until the group exists, so rank 0 alone would do them once per node, on a shared
    folder, at whatever time each node started."""
    from pytorch_lightning.utilities.rank_zero import rank_zero_only

    return rank_zero_only.rank == 0 and node_rank() == 0


EVERY_RANK_KEY = "moviessl_every_rank"
# ``log.info(..., extra=EVERY_RANK)``: a line each process of a job says of its own share (its videos
# done), shown from every rank; the other INFO lines come from the one that speaks for the job
EVERY_RANK = {EVERY_RANK_KEY: True}


# each launcher's rank variable and the one that says how many processes it started (Lightning's
# own launcher gives its children LOCAL_RANK and WORLD_SIZE, torchrun both and RANK)
_RANK_WORLD = (
    ("RANK", "WORLD_SIZE"),
    ("LOCAL_RANK", "WORLD_SIZE"),
    ("SLURM_PROCID", "SLURM_NTASKS"),
    ("JSM_NAMESPACE_RANK", "JSM_NAMESPACE_SIZE"),
)


def stray_rank_vars() -> list[tuple[str, str]]:
    """The rank variables (``(name, launch size variable)``) that name a rank > 0 while no launcher started this
    process as one of several: their launch size (``WORLD_SIZE``, ``SLURM_NTASKS``,
    ``JSM_NAMESPACE_SIZE``) is unset or 1. Every launcher that starts several processes sets it, so
    such a variable is one inherited from a parent shell or job: Lightning reads it as the process's
    rank all the same, and a plain process run there took itself for a rank > 0 (no output, no
    config.yaml, no folder lock, no CSV logs)."""
    out = []
    for key, world in _RANK_WORLD:
        v, w = os.environ.get(key, "").strip(), os.environ.get(world, "").strip()
        if v.isdigit() and int(v) > 0 and not (w.isdigit() and int(w) > 1):
            out.append((key, world))
    return out


def speaks_for_job() -> bool:
    """Whether this process reports its job to the person who started it (the command's result on
    stdout, its INFO lines, progress bars): the process group's rank 0 where one exists, else the
    launcher's rank 0 (``RANK``, then ``LOCAL_RANK``, ``SLURM_PROCID``, ``JSM_NAMESPACE_RANK``, as
    Lightning reads them) on node 0. From the environment alone, without importing Lightning, so a
    command that never trains pays nothing; :func:`job_leader` asks Lightning the same of the file
    steps. A rank variable without a launch of several processes (:func:`stray_rank_vars`) does not
    count: that process is alone, and speaks."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    stray = {key for key, _ in stray_rank_vars()}
    for key, _ in _RANK_WORLD:
        v = os.environ.get(key, "").strip()
        if v.isdigit() and key not in stray:
            return int(v) == 0 and node_rank() == 0
    return node_rank() == 0


def launch_token() -> str | None:
    """What every process of this launch shares and no other launch running now does: torchrun's
    run id and store address (a run id alone is ``none`` unless ``--rdzv-id`` or ``--standalone``
    sets one), srun's job and step, jsrun's LSF job, else an address set by hand for Lightning's
    launcher on each node (``MASTER_ADDR``, ``MASTER_PORT``). None for a plain process, and for
    Lightning's own launcher before it starts its ranks (they are its children)."""
    env = os.environ
    master = f"{env.get('MASTER_ADDR', '').strip()}:{env.get('MASTER_PORT', '').strip()}"
    if env.get("TORCHELASTIC_RUN_ID"):
        return f"torchrun {env['TORCHELASTIC_RUN_ID']} {master}"
    step = env.get("SLURM_STEP_ID", env.get("SLURM_STEPID", "")).strip()
    if env.get("SLURM_JOB_ID", "").strip() and step:
        return f"slurm {env['SLURM_JOB_ID'].strip()}.{step}"
    if env.get("LSB_JOBID", "").strip() and env.get("JSM_NAMESPACE_RANK"):
        return f"lsf {env['LSB_JOBID'].strip()}"
    if env.get("MASTER_ADDR", "").strip() and env.get("MASTER_PORT", "").strip():
        return f"master {master}"
    return None


def launch_rank() -> tuple[int, int]:
    """``(global rank, world size)`` from the launcher's environment, before any process group
    exists (torchrun's ``RANK``/``WORLD_SIZE``, srun's ``SLURM_PROCID``/``SLURM_NTASKS``, jsrun's
    ``JSM_NAMESPACE_RANK``/``JSM_NAMESPACE_SIZE``); ``(0, 1)`` for a plain process -- also the first
    process of Lightning's own launcher, which starts the others only when training begins."""
    for r_key, w_key in (
        ("RANK", "WORLD_SIZE"),
        ("SLURM_PROCID", "SLURM_NTASKS"),
        ("JSM_NAMESPACE_RANK", "JSM_NAMESPACE_SIZE"),
    ):
        r, w = os.environ.get(r_key, "").strip(), os.environ.get(w_key, "").strip()
        if r.isdigit() and w.isdigit() and int(r) < int(w):
            return int(r), int(w)
    return 0, 1


def launcher_world() -> tuple[int, str] | None:
    """``(processes, who started them)`` where a launcher outside Lightning started this process as
    one of several, as Lightning tells them: torchrun (``TORCHELASTIC_RUN_ID``, ``WORLD_SIZE``) or
    srun (``SLURM_NTASKS``, unless the job is named ``bash`` or ``interactive``, Lightning's sign of
    an allocation it launches in itself); None otherwise (a plain process, Lightning's own launcher)."""
    env = os.environ
    w = env.get("WORLD_SIZE", "").strip()
    if env.get("TORCHELASTIC_RUN_ID") and w.isdigit():
        return int(w), "torchrun's WORLD_SIZE"
    n = env.get("SLURM_NTASKS", "").strip()
    if n.isdigit() and env.get("SLURM_JOB_NAME") not in ("bash", "interactive"):
        return int(n), "srun's SLURM_NTASKS"
    return None


def check_launcher_world(
    planned: int, devices: Any, num_nodes: Any, keys: tuple[str, str] = ("trainer.devices", "trainer.num_nodes")
) -> None:
    """One line, before any work, where torchrun or srun started another number of processes than
    ``devices`` x ``num_nodes`` (``planned``). Lightning takes the ranks from the launcher but the
    process count from these settings: with one device each process trained (or extracted) alone as
    if it were the whole job, all of them into one folder, and with another count Lightning refused
    only once training began, in a traceback after the data were read. One process of an sbatch
    script without srun also sees ``SLURM_NTASKS``: where one process is planned, only a process
    of rank > 0 (which srun alone starts) is refused, and rank 0 runs the job alone."""
    found = launcher_world()
    if found is None or found[0] == planned:
        return
    world, who = found
    if planned == 1 and who.startswith("srun") and launch_rank()[0] == 0:
        return
    dev_key, nodes_key = keys
    per_node = os.environ.get("LOCAL_WORLD_SIZE" if who.startswith("torchrun") else "SLURM_NTASKS_PER_NODE", "")
    hint = "the processes per node and the number of nodes it launched"
    if per_node.strip().isdigit() and int(per_node) > 0 and world % int(per_node) == 0:
        hint = f"{dev_key}={int(per_node)} {nodes_key}={world // int(per_node)}"
    if who.startswith("srun"):  # Lightning then starts none itself: more devices need more srun tasks
        hint += ", or start one task per device (srun --ntasks-per-node)"
    raise BadInputError(
        dev_key,
        f"the launcher started {world} process{'es' if world != 1 else ''} ({who}) but {dev_key}={devices} x "
        f"{nodes_key}={num_nodes} make {planned}: give {hint}",
    )


def rotated_order(n: int, rank: int = 0, world: int = 1) -> list[int]:
    """``0..n-1`` starting at rank ``rank``'s share (``rank * n // world``) and wrapping around: each
    rank of a launch builds its share of a cache first and meets the others' shares already built."""
    start = rank * n // max(1, world)
    return [*range(start, n), *range(start)]


def gpu_ids(devices: Any, key: str = "trainer.devices") -> list[int] | None:
    """The GPU ids a trainer's ``devices`` names, as Lightning reads it: a list (``[2, 3]``) or a
    comma-separated string (``"2,3"``, ``"3,"``); None for a count (``2``, ``"2"``, ``-1``, ``"auto"``:
    the first ones)."""
    if isinstance(devices, str):
        if "," not in devices:
            return None
        parts = [d for d in devices.split(",") if d.strip()]
    elif isinstance(devices, Sequence):
        parts = list(devices)
    else:
        return None
    try:
        return [int(d) for d in parts]
    except (TypeError, ValueError):
        raise BadInputError(key, f"{devices!r}: give a count or a list of GPU ids, e.g. [2, 3]") from None


def local_device(accelerator: str = "auto", devices: Any = None) -> str:
    """This process's GPU when the accelerator may be one and CUDA is there, else ``cpu``: for work a
    stage does outside Lightning (input statistics, a cache of frozen features), so that under
    torchrun or SLURM the ranks do not all land on GPU 0. The GPU is the one Lightning gives this
    local rank: ``devices``' ids where it names them (:func:`gpu_ids`), else ``cuda:<local rank>``."""
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        ids = gpu_ids(devices)
        if ids:
            return f"cuda:{ids[local_rank() % len(ids)]}"
        return f"cuda:{local_rank() % max(1, torch.cuda.device_count())}"
    return "cpu"


def pins_memory(accelerator: str = "auto") -> bool:
    """Whether the data loaders of a run on ``accelerator`` pin their batches: only where the batches
    go to a CUDA GPU (as :func:`local_device` picks one). Pinned from ``torch.cuda.is_available()``
    alone, a CPU run (``accelerator: cpu``) on a machine with a GPU pinned every batch for no copy to
    a device, and the pinning made a CUDA context on the current GPU, GPU 0, in every process of the
    run: memory of a GPU the run does not use, which another job may hold."""
    return accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()


def check_machine(
    accelerator: str,
    devices: Any,
    precision: Any = None,
    keys: tuple[str, str, str] = ("trainer.accelerator", "trainer.devices", "trainer.precision"),
) -> None:
    """One line naming the setting (``keys``: accelerator, devices, precision) where this machine
    cannot run what they ask for, before any work: Lightning says so only when it builds the
    trainer, after the data are read. A GPU torch cannot see (a job that landed on a CPU node), GPU
    ids or a count beyond the GPUs there are, a CPU run given GPU ids or -1 (Lightning's CPU
    accelerator takes a process count or ``auto``), TransformerEngine's precisions without a CUDA
    GPU. Lightning's ``gpu`` is also Apple's MPS; ``auto`` is a GPU where there is one. Names are
    checked with the config (:func:`moviessl.config.check_ranges`); this is the machine's part."""
    acc_key, dev_key, prec_key = keys
    if accelerator not in ("cpu", "gpu", "cuda", "auto"):  # mps, tpu, a plugin's: there or not
        if not _accelerator_available(accelerator):
            raise BadInputError(acc_key, f"{accelerator}: Lightning finds no such device on this machine")
        return
    if accelerator == "auto" and _accelerator_available("tpu"):
        return  # Lightning's auto picks a TPU first; its devices are Lightning's to check
    cuda = accelerator != "cpu" and torch.cuda.is_available()
    mps = accelerator in ("gpu", "auto") and not cuda and torch.backends.mps.is_available()
    if accelerator in ("gpu", "cuda") and not (cuda or mps):
        # extract-instances' --device names one device: it takes cpu, not auto
        other = "cpu" if acc_key == "--device" else "cpu or auto"
        raise BadInputError(acc_key, f"{accelerator}: torch sees no GPU on this machine (use {other})")
    if str(precision).startswith("transformer-engine") and not cuda:
        raise BadInputError(prec_key, f"{precision} runs on CUDA GPUs only")
    d = str(devices).strip()
    if not (cuda or mps):
        if d != "auto" and not (d.isdecimal() and int(d) >= 1):
            raise BadInputError(
                dev_key, f"{devices!r}: a CPU run takes a process count (>= 1) or auto, not GPU ids or -1"
            )
        return
    if not cuda:
        return
    n, ids = torch.cuda.device_count(), gpu_ids(devices, dev_key)
    if ids and max(ids) >= n:
        raise BadInputError(
            dev_key, f"{devices!r}: GPU id {max(ids)} does not exist; torch sees {n} GPU(s), ids 0-{n - 1}"
        )
    if ids is None and d.isdecimal() and int(d) > n:
        raise BadInputError(dev_key, f"{devices!r}: torch sees {n} GPU(s) on this machine")


def _accelerator_available(name: str) -> bool:
    """Whether Lightning's registered accelerator ``name`` has a device here (False where its
    package, e.g. torch_xla for ``tpu``, is not installed)."""
    from pytorch_lightning.accelerators import AcceleratorRegistry

    try:
        return bool(AcceleratorRegistry[name]["accelerator"].is_available())
    except Exception:  # a missing package, a driver that does not answer: not available
        return False


def trainer_device(t: Any) -> str:
    """:func:`local_device` of a ``trainer`` config block (its ``accelerator`` and ``devices``)."""
    return local_device(t.accelerator, t.devices)


def broadcast_object(obj, src: int = 0):
    """``obj`` of rank ``src`` on every process (a picklable object; identity without DDP). Used after
    rank 0 alone has scored a run, so every rank takes the same decisions and writes the same files."""
    if not is_dist():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, device=_nccl_device())
    return box[0]


def _nccl_device() -> torch.device | None:
    """This process's current GPU where the group is NCCL's, which reduces device tensors only
    (Lightning makes the rank's own GPU current); None for gloo and the others, which take CPU ones."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None


def gather_objects(obj) -> list:
    """Every rank's ``obj`` in rank order (a picklable object; ``[obj]`` without DDP). Used where each
    rank noted something of its own share of the data (the bad videos its batches met) and rank 0
    writes the run's record of all of them."""
    if not is_dist():
        return [obj]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def global_mean_share(n_local: float | torch.Tensor, device: torch.device | str | None = None) -> float | torch.Tensor:
    """``n_local * world / n_global``: the factor that turns this process's mean over its own
    ``n_local`` items (masked tokens, labelled events, target tokens; a weighted loss's summed
    weights) into its share of the mean over every process's items, once DDP has averaged the
    gradients over the processes. Without it an item of a process that held fewer weighed more
    (``1 / (world * n_local)`` instead of ``1 / n_global``), and a step on 2 processes was not the
    step of one process on both halves. An all-reduce of the count: every process calls it at every
    step, whatever its own count. 1.0 without a process group, so that the caller's loss, and a
    one-process run, stay bit-identical (the caller multiplies only under DDP); 1.0 also where no
    process holds an item (every loss is then a zero without gradient). ``device``: the loss's; None
    takes the group's own (this GPU under NCCL, else the CPU, whatever torch's default device).

    ``n_local`` a number or a tensor (a count made on the device); under a group the share is a
    float64 tensor of shape () on ``device`` (:func:`times_share` multiplies by it): read on the host,
    the reduced count waited for all the work queued on the GPU at every step. The count is made
    where it is reduced by a fill, not copied from the host (a blocking copy)."""
    if not is_dist():
        return 1.0
    if device is None:  # a CPU tensor fails NCCL's all-reduce
        device = _nccl_device() or torch.device("cpu")
    # float64: exact counts; gloo reduces CPU tensors, NCCL the device's
    if isinstance(n_local, torch.Tensor):
        n = n_local.detach().reshape(1).to(device=device, dtype=torch.float64)
    else:
        n = torch.full((1,), float(n_local), dtype=torch.float64, device=device)
    n_global = n.clone()
    dist.all_reduce(n_global)
    # a division of two tensors (``number / tensor`` is a reciprocal times the number, rounded twice):
    # the same float64 as the host's ``n_local * world / n_global``
    share = (n * dist.get_world_size()) / n_global
    return torch.where(n_global > 0, share, torch.ones_like(share)).reshape(())


def times_share(x: torch.Tensor, share: float | torch.Tensor) -> torch.Tensor:
    """``x * share`` for a share of :func:`global_mean_share`, as the product by the Python number was:
    the share rounded once to the type ``x`` is computed in (float32 for a half-precision ``x``,
    torch's ``opmath`` of a product by a number), the product given ``x``'s dtype."""
    if not isinstance(share, torch.Tensor):
        return x * share
    op = torch.promote_types(x.dtype, torch.float32)
    return (x.to(op) * share.to(op)).to(x.dtype)


class _GatherWithGrad(torch.autograd.Function):
    """All-gather whose backward sums every process's gradient of the gathered tensor and returns this
    process's rows (SimCLR's ``GatherLayer`` pattern). Written here because torch's
    ``torch.distributed.nn.functional.all_gather`` is deprecated (a FutureWarning on every run)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.n = x.shape[0]
        return gather_no_grad(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone(memory_format=torch.contiguous_format)  # never reduce autograd's buffer in place
        dist.all_reduce(grad)
        r = dist.get_rank()
        return grad[r * ctx.n : (r + 1) * ctx.n]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """All-gather along dim 0, differentiable. Equal local batch sizes are assumed."""
    if not is_dist():
        return x
    return _GatherWithGrad.apply(x)


@torch.no_grad()
def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """All-gather along dim 0 without gradient (for queue updates)."""
    if not is_dist():
        return x
    out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out, dim=0)


_LAUNCHER_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT", "GROUP_RANK")


def fresh_launch_env(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a child process that starts its own single-node DDP launch: without the
    rank, address, SLURM, torchelastic and Lightning variables of any launcher this process runs under
    (Lightning would otherwise join the outer job instead of spawning its own ranks)."""
    env = os.environ if environ is None else environ
    return {
        k: v for k, v in env.items() if k not in _LAUNCHER_VARS and not k.startswith(("SLURM_", "TORCHELASTIC_", "PL_"))
    }
