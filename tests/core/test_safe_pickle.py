import io
import pickle

import numpy as np
import pytest

from moviessl.utils.safe_pickle import safe_load


@pytest.mark.parametrize("protocol", [4, 5])
def test_numpy_arrays_in_a_protocol_5_pickle_load(protocol):
    """Protocol 5 (``pickle.HIGHEST_PROTOCOL``, and Python 3.14's default) writes a contiguous array
    as ``numpy._core.numeric._frombuffer(buffer, dtype, shape, order)``, which the restricted
    unpickler refused: such a metadata or prediction pickle could not be read at all."""
    obj = {"f": np.arange(6, dtype=np.float32).reshape(2, 3), "t": np.zeros((2, 2)).T, "s": np.array(["a", "bc"])}
    got = safe_load(io.BytesIO(pickle.dumps(obj, protocol=protocol)))
    for k, v in obj.items():
        assert got[k].dtype == v.dtype and np.array_equal(got[k], v)
    assert got["t"].flags.f_contiguous  # the order travels with the buffer


def test_the_restriction_holds_for_protocol_5():
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to load (os|posix)\.system"):
        safe_load(io.BytesIO(pickle.dumps(_Evil(), protocol=5)))


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("true",))
