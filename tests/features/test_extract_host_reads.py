"""An extraction batch waits for the GPU once: its features' copy to the host. The batch's own
host-side facts (a clip's missing flag, the rows its boxes fill) are carried past the transfer
instead of copied back (tests/host_reads.py says how a CPU run counts the reads)."""

from __future__ import annotations

import collections

from test_extract import backbone, run_extract, videos  # noqa: F401 (fixtures)
from test_instances import _extract, boxes  # noqa: F401 (a fixture)

from host_reads import HostReads
from moviessl.features.extract import FeatureExtractor
from moviessl.features.instances import InstanceExtractor


def _counted(monkeypatch, module_cls):
    hr = HostReads(monkeypatch)
    hr.window(module_cls, "on_after_batch_transfer", mark_batch=True)
    hr.window(module_cls, "predict_step")
    calls = collections.Counter()
    step = module_cls.predict_step

    def counted_step(self, batch, *a, **k):
        calls[batch.get("kind")] += 1
        return step(self, batch, *a, **k)

    monkeypatch.setattr(module_cls, "predict_step", counted_step)
    return hr, calls


def _reads_are_the_features_copy(hr: HostReads, batches: int) -> None:
    """Every read is the features' copy, one line read by each batch: ``.cpu()`` and the
    ``.numpy()`` of what it copied (the test's mark of a device tensor outlives ``.cpu()``)."""
    reads = hr.where.get("read", {})
    assert batches and len(reads) == 1 and set(reads.values()) == {2 * batches}, (hr.report(), batches)


def test_an_event_batch_copies_its_features_alone_to_the_host(backbone, videos, tmp_path, monkeypatch):  # noqa: F811
    """The ``missing`` flags of a batch's clips were moved to the device with the clips and copied back
    (``.cpu()``), a second wait per batch after the features'."""
    hr, calls = _counted(monkeypatch, FeatureExtractor)
    assert run_extract("--backbone", backbone, "--videos", videos, "--out", tmp_path / "f", "--batch-events", 2) == 0
    _reads_are_the_features_copy(hr, calls["clips"])


def test_an_instance_batch_copies_its_features_alone_to_the_host(backbone, boxes, tmp_path, monkeypatch):  # noqa: F811
    """The rows a batch's boxes fill were read from the device (``.tolist()``) before the features
    were copied: two waits per batch where one would do."""
    hr, calls = _counted(monkeypatch, InstanceExtractor)
    assert _extract(backbone, boxes, boxes / "tracks", tmp_path / "i") == 0
    _reads_are_the_features_copy(hr, calls["clips"])
