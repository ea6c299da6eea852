import json
import subprocess
import sys
from pathlib import Path

import pytest

from moviessl.dist import fresh_launch_env

SCRIPT = Path(__file__).with_name("loader_resume_script.py")


def _run(out, tag, steps, stop=-1, workers=0, devices=1, resume=False):
    args = [sys.executable, str(SCRIPT), str(out), str(steps), str(stop), str(workers), str(devices), tag]
    p = subprocess.run(
        [*args, *(["resume"] if resume else [])], env=fresh_launch_env(), capture_output=True, text=True, timeout=300
    )
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
