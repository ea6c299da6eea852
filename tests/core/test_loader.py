import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from moviessl.dist import fresh_launch_env
from moviessl.loader import EpochShuffle, train_loader

SCRIPT = Path(__file__).with_name("loader_resume_script.py")


def _run(out, tag, steps, stop=-1, workers=0, devices=1, resume=False, every=3, val=False):
    args = [sys.executable, str(SCRIPT), str(out), str(steps), str(stop), str(workers), str(devices), tag]
    args += [*(["resume"] if resume else []), f"every={every}", *(["val"] if val else [])]
    p = subprocess.run(args, env=fresh_launch_env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return [json.loads((out / f"seen{r}.{tag}.json").read_text()) for r in range(devices)]


@pytest.mark.parametrize(
    "workers,devices", [(0, 1), pytest.param(2, 1, id="persistent-workers"), pytest.param(0, 2, id="ddp")]
)
def test_a_resume_mid_epoch_trains_on_the_rest_of_that_epoch(tmp_path, workers, devices):
    """Preempted at step 8 (last checkpoint: step 6, one batch into epoch 1 of 5-batch epochs), the
    resumed run trains on exactly the batches the uninterrupted run trained on from step 6 on: a plain
    loader started the epoch again (its first batch twice, its last never)."""
    kw = dict(workers=workers, devices=devices)
    whole = _run(tmp_path / "whole", "whole", 12, **kw)
    assert all(len(w) == 12 for w in whole)
    cut = _run(tmp_path / "cut", "first", 12, stop=8, **kw)
    resumed = _run(tmp_path / "cut", "resumed", 12, resume=True, **kw)
    for r in range(devices):
        assert cut[r] == whole[r][:8]
        assert resumed[r] == whole[r][6:]
    for e in range(2):  # each epoch every item once, dealt between the ranks
        assert sorted(x for w in whole for step in w[e * 5 : e * 5 + 5] for x in step) == list(range(10 * devices))


def _items(batches):
    return [b[0][:, 0].long().tolist() for b in batches]


def test_a_restored_loader_serves_the_rest_of_its_epoch_without_loading_the_rest():
    data = torch.utils.data.TensorDataset(torch.arange(12.0).view(-1, 1))
    first = train_loader(data, 3, seed=1)
    first.sampler.set_epoch(2)
    it = iter(first)
    done = [next(it), next(it)]
    state = first.state_dict()
    assert state == {"epoch": 2, "batches": 2, "items": 12, "per_epoch": 4, "batch_size": 3, "replicas": 1, "seed": 1}

    loaded = []

    class Counting(torch.utils.data.Dataset):
        def __len__(self):
            return 12

        def __getitem__(self, i):
            loaded.append(i)
            return data[i]

    again = train_loader(Counting(), 3, seed=1)
    again.load_state_dict({**state, "resumes_epoch": 2})
    rest = list(again)
    assert _items(done) + _items(rest) == _items(list(first))  # epoch 2's order, as the sampler was left
    assert len(loaded) == 6  # the two batches served before were not loaded again
    assert again.state_dict()["batches"] == 4
    assert len(list(again)) == 4  # the next epoch whole


def test_a_finished_epoch_or_other_data_skips_nothing(caplog):
    data = torch.utils.data.TensorDataset(torch.arange(12.0).view(-1, 1))
    loader = train_loader(data, 3, seed=1, shuffle=False)
    loader.load_state_dict({"epoch": 0, "batches": 4, "items": 12, "resumes_epoch": 1})  # ended at the epoch's end
    assert len(list(loader)) == 4 and loader.sampler.epoch == 1
    loader.load_state_dict({"epoch": 1, "batches": 2, "items": 10, "resumes_epoch": 1})
    assert len(list(loader)) == 4
    assert "items 10 then, 12 now" in caplog.text
    loader.load_state_dict({"epoch": 1, "batches": 2, "items": 12, "batch_size": 2, "resumes_epoch": 1})
    assert len(list(loader)) == 4  # another partition (batch size, world size): nothing skipped
    assert "batch_size 2 then, 3 now" in caplog.text
    loader.load_state_dict({"epoch": 1, "batches": 4, "items": 12, "resumes_epoch": 1})  # a finished epoch
    assert len(list(loader)) == 4
    loader.load_state_dict({"epoch": 1, "batches": 2, "items": 12, "resumes_epoch": 1})
    assert _items(loader) == [[6, 7, 8], [9, 10, 11]]


@pytest.mark.parametrize("devices", [1, 2])
def test_extending_a_run_that_stopped_mid_epoch_goes_on_with_that_epoch(tmp_path, devices):
    """A run ended by max_steps two batches into epoch 1 and extended trains what an uninterrupted run
    does: epoch 1's last 3 batches, then epoch 2. Lightning counts the stopped epoch as done in its
    checkpoint at the end of training: the extension ran those 3 batches under the name of epoch 2,
    then epoch 3's order, and epoch 2's was never trained (the ``epoch`` column read 0, 2, 3)."""
    whole = _run(tmp_path / "a", "whole", 12, devices=devices, val=True)
    short = _run(tmp_path / "b", "short", 7, devices=devices, val=True, every=0)
    more = _run(tmp_path / "b", "more", 12, devices=devices, resume=True, val=True, every=0)
    assert [s[:7] for s in whole] == short
    assert [s[7:] for s in whole] == more
    with open(tmp_path / "b" / "logs" / "metrics.csv") as f:
        epochs = [int(r["epoch"]) for r in csv.DictReader(f) if r["train/global_step"]]
    assert epochs == [1] * 3 + [2] * 2


def test_a_checkpoint_on_an_epochs_last_batch_resumes_with_the_next_epoch(tmp_path):
    """A step checkpoint on the last batch of epoch 0 (every 5 steps, 5 an epoch), preempted at step
    7, with a worker: Lightning sets the next epoch only after the workers have drawn their indices,
    so the resumed epoch 1 was epoch 0's order again."""
    whole = _run(tmp_path / "whole", "whole", 12, workers=1, every=5)[0]
    _run(tmp_path / "cut", "first", 12, stop=7, workers=1, every=5)
    assert _run(tmp_path / "cut", "resumed", 12, workers=1, resume=True, every=5)[0] == whole[5:]


def test_extending_a_run_that_ended_on_an_epochs_last_batch_trains_the_next_epoch_whole(tmp_path):
    """Lightning's checkpoint at the end of training (max_steps on an epoch's last batch) keeps the
    full batch count of the closed epoch: the extension took the next epoch as done after one batch."""
    whole = _run(tmp_path / "a", "whole", 12)[0]
    _run(tmp_path / "b", "short", 5)
    assert _run(tmp_path / "b", "more", 12, resume=True)[0] == whole[5:]


def test_extending_a_run_that_ended_on_an_epochs_last_batch_after_validation_trains_the_next_epoch(tmp_path):
    """As above with a validation loop at each epoch's end (``pretrain-context``'s): Lightning took the
    end-of-training checkpoint for one written before the epoch's validation, ran an iteration that
    skips it and closed the next epoch there, so the extension trained epoch 2's order under that
    name and epoch 1 was never seen (the ``epoch`` column of its log jumped from 0 to 2)."""
    whole = _run(tmp_path / "a", "whole", 12, val=True)[0]
    _run(tmp_path / "b", "short", 5, val=True, every=0)
    assert _run(tmp_path / "b", "more", 12, resume=True, val=True, every=0)[0] == whole[5:]
    with open(tmp_path / "b" / "logs" / "metrics.csv") as f:
        epochs = [int(r["epoch"]) for r in csv.DictReader(f) if r["train/global_step"]]
    assert epochs == [1] * 5 + [2] * 2


def _logged_steps(logs):
    """(the ``step`` column, the ``global_step`` the module logged) of each training row of a CSV log."""
    with open(logs) as f:
        rows = [r for r in csv.DictReader(f) if r["train/global_step"]]
    return [(int(r["step"]), int(float(r["train/global_step"]))) for r in rows]


def test_a_resumed_runs_rows_are_logged_at_the_steps_they_trained(tmp_path):
    """Ended by max_steps on an epoch's last batch, after that epoch's validation, and extended (as
    ``pretrain-context --resume trainer.max_steps=...``): Lightning's first resumed iteration trains
    nothing but was counted, so every row of the resumed part was logged one step late (steps 6-8 of a
    run that trained 5-7)."""
    _run(tmp_path, "short", 5, val=True, every=0)
    assert _logged_steps(tmp_path / "logs" / "metrics.csv") == [(s, s) for s in range(5)]
    _run(tmp_path, "more", 8, resume=True, val=True, every=0)
    assert _logged_steps(tmp_path / "logs" / "metrics.csv") == [(s, s) for s in range(5, 8)]


def test_replicate_seeds_do_not_share_their_orders():
    """Drawn from seed + epoch (DistributedSampler's rule), seed 1's epoch 0 was seed 0's epoch 1."""
    orders = {}
    for seed in range(3):
        for epoch in range(3):
            o = EpochShuffle(50, seed)
            o.set_epoch(epoch)
            orders[seed, epoch] = tuple(o)
    assert len(set(orders.values())) == 9


def test_a_resume_with_another_seed_skips_nothing(caplog):
    """The epoch's order comes from the seed: skipping the batches served under the old seed's order
    trained some items of the epoch twice and left others out, without a word."""
    data = torch.utils.data.TensorDataset(torch.arange(12.0).view(-1, 1))
    first = train_loader(data, 3, seed=0)
    it = iter(first)
    done = [next(it), next(it)]
    state = {**first.state_dict(), "resumes_epoch": 0}
    again = train_loader(data, 3, seed=1)
    again.load_state_dict(state)
    rest = list(again)
    assert len(rest) == 4 and _items(rest) == _items(list(train_loader(data, 3, seed=1)))
    assert "seed 0 then, 1 now" in caplog.text
    same = train_loader(data, 3, seed=0)
    same.load_state_dict(state)
    assert _items(done) + _items(list(same)) == _items(list(train_loader(data, 3, seed=0)))


def test_the_epoch_order_is_drawn_on_the_cpu_whatever_the_default_device():
    """A user's ``torch.set_default_device("cuda")`` drew the permutation on the GPU, whose randperm
    refuses the sampler's CPU generator: no training loader served a batch. The orders are those
    drawn on the CPU before."""
    from default_device import gpu_like_default_device

    def orders():
        out = []
        for epoch in range(2):
            o = EpochShuffle(8, 5)
            o.set_epoch(epoch)
            out.append(list(o))
        return out

    expected = [[7, 1, 4, 3, 0, 5, 2, 6], [5, 6, 4, 1, 7, 2, 3, 0]]
    assert orders() == expected
    with gpu_like_default_device():
        assert orders() == expected


class _Draws(torch.utils.data.Dataset):
    """Each item a draw from the stream of the process that loads it (a loader worker's seeded one)."""

    def __len__(self):
        return 6

    def __getitem__(self, i):
        return torch.randint(0, 2**30, (1,), device="cpu")


@pytest.mark.parametrize("workers", [0, 2])
def test_the_loaders_worker_seeds_come_from_the_cpu_whatever_the_default_device(workers):
    """torch's DataLoader draws its workers' base seed into a tensor of torch's default device: under
    a user's ``torch.set_default_device("cuda")`` it came from the GPU's stream, so the workers drew
    other clips and crops than the same seed on the CPU (and, forked, inherited the GPU as their
    default device). The iterator is made on the CPU: the same batches as without the setting."""
    from default_device import gpu_like_default_device

    def batches():
        torch.manual_seed(7)
        return [b.tolist() for b in train_loader(_Draws(), 2, seed=0, num_workers=workers)]

    cpu = batches()
    with gpu_like_default_device():
        assert batches() == cpu
