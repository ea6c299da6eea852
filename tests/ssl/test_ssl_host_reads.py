"""A backbone training step (CVRL, MoDist, supervised) makes no call that on a GPU waits for it:
no device value read on the host, no boolean index on a device mask, no blocking copy from the host,
no Python number logged (tests/host_reads.py says how a CPU run counts them)."""

from __future__ import annotations

import pytest
from ssl_testutil import tiny_overrides

from host_reads import HostReads
from moviessl.config import load_config
from moviessl.ssl.pretrain import pretrain
from moviessl.ssl.registry import get_method
from moviessl.training import Throughput

STEPS = 3
RUNS = {
    "cvrl": ("cvrl", []),
    "cvrl_intra_neg": ("cvrl", ["cvrl.intra_neg=[repeat,shuffle,reverse]"]),
    "modist": ("modist", []),
    # the dataset crops the flow, MoDist only flips it (its whole-frame box made at every step)
    "modist_dataset_crops": ("modist", ["data.frame_crop=full", "modist.align_crops=false"]),
    "supervised": ("supervised", []),
}


@pytest.fixture(scope="module", params=list(RUNS))
def step_calls(request, clip_list, tmp_path_factory):
    method, extra = RUNS[request.param]
    with pytest.MonkeyPatch.context() as mp:
        # the throughput's count is read when it is logged (at most twice a second on a GPU); a step of
        # these tiny runs takes longer than that on a CPU, so its log is moved out of the runs here
        mp.setattr(Throughput, "interval_s", 1e9, raising=False)
        hr = HostReads(mp)
        hr.step_windows(get_method(method))
        cfg = load_config("backbone", "cpu", tiny_overrides([f"trainer.max_steps={STEPS}", *extra]))
        pretrain(method, clip_list, tmp_path_factory.mktemp(request.param), cfg, run_probe=False, progress=False)
    return request.param, hr


def _at(hr: HostReads, kind: str, *files: str) -> dict:
    return {w: n for w, n in hr.where.get(kind, {}).items() if w.split(":")[0] in files}


def test_the_batched_augmentation_reads_nothing_of_the_device(step_calls):
    """ConsistentAugment chose the clips of each colour op, of grayscale, blur and solarisation by
    boolean masks on the device (``if sel.any(): y[sel] = ...``): some twenty waits a step for the
    GPU, and MoDist's flow flip two more. They are chosen from the parameters as drawn, on the host."""
    name, hr = step_calls
    assert not _at(hr, "read", "augment.py"), (name, hr.report())


def test_a_step_makes_no_blocking_copy_from_the_host(step_calls):
    """The drawn augmentation parameters (ten tensors), the normalisation's mean and std, InfoNCE's
    targets, MoDist's box scale (and its whole-frame box when the dataset crops the flow) and the
    time-broken clips' frame order were made on the host and copied with a blocking ``.to(device)``
    (or made by ``torch.tensor(..., device=)``): each waited for all the work queued on the GPU."""
    name, hr = step_calls
    assert not hr.where.get("blocking_copy"), (name, hr.report())


def test_the_bad_video_count_and_the_logged_rates_wait_for_nothing(step_calls):
    """Each step read the batch's bad-video indices (``.tolist()`` of the transferred tensor) and
    logged the learning rate as a Python number, which Lightning copies to the device (a blocking
    copy); the throughput's rate as well. The indices are taken before the transfer, the numbers
    logged as host tensors."""
    name, hr = step_calls
    assert not _at(hr, "read", "base.py", "training.py"), (name, hr.report())
    assert not hr.where.get("logged_number"), (name, hr.report())


def test_modists_queues_read_nothing_of_the_device(step_calls):
    """MemoryQueue.enqueue read its pointer from the device (``int(self.ptr)``), twice a MoDist step;
    the host keeps the pointer and the count it wrote."""
    name, hr = step_calls
    if not name.startswith("modist"):
        pytest.skip("no queue")
    assert not _at(hr, "read", "queue.py"), (name, hr.report())


def test_a_backbone_step_waits_for_nothing(step_calls):
    name, hr = step_calls
    assert hr.total() == 0, (name, hr.report())
