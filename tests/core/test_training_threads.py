import torch

from moviessl.training import cpu_threads


def test_cpu_threads_respects_omp_num_threads(monkeypatch):
    # two jobs started side by side with OMP_NUM_THREADS=1 must not each grab every core (measured:
    # 2 x 2 threads on 2 cores ran CVRL 15x slower than 2 x 1)
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        cpu_threads()
        assert torch.get_num_threads() == 1
        cpu_threads(2)  # an explicit count wins
        assert torch.get_num_threads() == 2
        monkeypatch.delenv("OMP_NUM_THREADS")
        cpu_threads()
        import os

        assert torch.get_num_threads() == (os.cpu_count() or 1)
    finally:
        torch.set_num_threads(before)
