import pytest
import torch

from moviessl.ssl.queue import MemoryQueue


def test_init_is_normalised_gaussian():
    torch.manual_seed(0)
    q = MemoryQueue(64, 8)
    assert q.queue.shape == (64, 8)
    assert torch.allclose(q.queue.norm(dim=1), torch.ones(64), atol=1e-5)
    assert int(q.ptr) == 0 and not q.is_full
    # buffers travel with the state dict (checkpointed / resumed)
    assert {"queue", "ptr", "num_enqueued"} <= set(q.state_dict())


def test_fifo_ring_pointer_and_wrap():
    q = MemoryQueue(10, 2)
    keys = [torch.full((4, 2), float(i)) for i in range(1, 5)]
    q.enqueue(keys[0])
    assert int(q.ptr) == 4 and torch.all(q.queue[:4] == 1)
    q.enqueue(keys[1])
    assert int(q.ptr) == 8
    q.enqueue(keys[2])  # rows 8, 9 then wraps to 0, 1
    assert int(q.ptr) == 2
    assert torch.all(q.queue[8:10] == 3) and torch.all(q.queue[0:2] == 3)
    assert torch.all(q.queue[2:4] == 1), "rows not yet overwritten keep the older keys"
    assert torch.all(q.queue[4:8] == 2)
    assert q.is_full and int(q.num_enqueued) == 12


def test_more_keys_than_room_keeps_newest():
    q = MemoryQueue(4, 1)
    q.enqueue(torch.arange(6, dtype=torch.float).view(6, 1))
    assert sorted(q.queue.view(-1).tolist()) == [2.0, 3.0, 4.0, 5.0]


def test_divisibility():
    q = MemoryQueue(12, 3, require_divisible=True)
    q.enqueue(torch.randn(4, 3))
    with pytest.raises(AssertionError):
        q.enqueue(torch.randn(5, 3))
    with pytest.raises(ValueError):
        q.enqueue(torch.randn(4, 2))


def test_no_grad_into_queue_and_get_is_a_copy():
    q = MemoryQueue(8, 4)
    w = torch.randn(4, 4, requires_grad=True)
    keys = torch.randn(2, 4) @ w
    q.enqueue(keys)
    assert not q.queue.requires_grad and q.queue.grad_fn is None
    neg = q.get()
    query = torch.randn(2, 4, requires_grad=True)
    loss = (query @ neg.t()).sum()
    q.enqueue(torch.randn(2, 4))  # in-place update after use must not break backward
    loss.backward()
    assert query.grad is not None and w.grad is None


def test_ids_follow_their_keys_and_mask_own_source_negatives():
    import torch.nn.functional as F

    from moviessl.ssl.losses import info_nce_queue

    q = MemoryQueue(4, 3, track_ids=True)
    assert (q.get_ids() == -1).all() and "ids" in q.state_dict()
    keys = F.normalize(torch.randn(6, 3), dim=1)
    q.enqueue(keys[:2], torch.tensor([7, 8]))
    q.enqueue(keys[2:6], torch.tensor([1, 2, 3, 4]))  # wraps: ids stay with their keys
    assert q.get_ids().tolist() == [3, 4, 1, 2] and torch.allclose(q.get()[2], keys[2])
    with pytest.raises(ValueError):
        q.enqueue(keys[:2])  # a tracking queue needs ids
    # a stale key of the query's own video is left out of the negatives: the loss equals the loss
    # against the queue without that row, and is lower than with it
    query = keys[2:3].clone().requires_grad_()
    pos = F.normalize(torch.randn(1, 3), dim=1)
    masked = info_nce_queue(query, pos, q.get(), 0.1, torch.tensor([1]), q.get_ids())
    keep = q.get_ids() != 1
    assert torch.allclose(masked, info_nce_queue(query, pos, q.get()[keep], 0.1))
    assert masked < info_nce_queue(query, pos, q.get(), 0.1)
    masked.backward()
    assert torch.isfinite(query.grad).all()


def test_a_queue_goes_on_from_the_pointer_and_count_it_was_loaded_with():
    """The host keeps the pointer and count it wrote (reading the buffers made each step wait for the
    GPU); a state dict loaded, or buffers written from outside (a broadcast from rank 0), are read again."""
    a, b = MemoryQueue(10, 2, track_ids=True, init="empty"), MemoryQueue(10, 2, track_ids=True, init="empty")
    a.enqueue(torch.ones(3, 2), torch.arange(3))
    assert b.num_filled == 0  # b's host copy of its count before the load
    b.load_state_dict(a.state_dict())
    assert b.num_filled == 3 and b.get(filled_only=True).shape == (3, 2)
    b.enqueue(torch.full((2, 2), 2.0), torch.tensor([7, 8]))
    assert int(b.ptr) == 5 and torch.all(b.queue[3:5] == 2) and b.get_ids(filled_only=True).tolist() == [0, 1, 2, 7, 8]
    b.ptr.fill_(9)
    b.num_enqueued.fill_(9)
    b.buffers_written()  # as training.BroadcastReplicatedOnce does after its broadcast
    b.enqueue(torch.full((2, 2), 3.0), torch.tensor([4, 5]))
    assert int(b.ptr) == 1 and b.is_full and torch.all(b.queue[9] == 3) and torch.all(b.queue[0] == 3)


def test_filled_count_and_full_flag_at_and_past_the_size():
    """``is_full`` from exactly K keys written and ``num_filled`` capped at K: the ring test above
    passes K by 2 in one step, so a ``>`` for ``>=`` or an uncapped count passed it. MaskPred reads
    ``get(filled_only=True)`` and ``num_filled`` (its first step has no distractor)."""
    q = MemoryQueue(4, 2, init="empty")
    q.enqueue(torch.ones(3, 2))
    assert q.num_filled == 3 and not q.is_full
    q.enqueue(torch.ones(1, 2))  # exactly K keys
    assert q.num_filled == 4 and q.is_full
    q.enqueue(torch.ones(3, 2))  # 7 written, 4 held
    assert q.num_filled == 4 and q.is_full and q.get(filled_only=True).shape == (4, 2)


def test_more_keys_than_room_keeps_the_newest_ids_with_their_keys():
    """An overflowing enqueue keeps the newest K keys and must keep *their* ids: the ids mask the
    query's own-source negatives, so an id left with another key masks the wrong row."""
    q = MemoryQueue(3, 1, track_ids=True)
    q.enqueue(torch.arange(5, dtype=torch.float).view(5, 1), torch.arange(5) + 10)
    for key, i in zip(q.get().view(-1).tolist(), q.get_ids().tolist()):
        assert i == int(key) + 10
    assert sorted(q.get_ids().tolist()) == [12, 13, 14]
