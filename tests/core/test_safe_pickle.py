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


# a protocol-4 pickle of one string whose byte is not UTF-8: BINUNICODE decoding raises UnicodeDecodeError
BAD_UTF8_PICKLE = b"\x80\x04X\x01\x00\x00\x00\xff."


@pytest.mark.parametrize("reader", ["submission", "prediction"])
def test_a_pickle_with_bad_utf8_is_reported_as_a_pickle(tmp_path, reader):
    """UnicodeDecodeError was caught as JSON's fault whatever the file's kind: a submission pickle
    holding a bad UTF-8 string was reported as 'invalid JSON'."""
    from moviessl.errors import BadInputError
    from moviessl.eval.lvu import load_predictions
    from moviessl.eval.submission import load_submission

    p = tmp_path / "bad.pkl"
    p.write_bytes(BAD_UTF8_PICKLE)
    with pytest.raises(UnicodeDecodeError):
        pickle.loads(BAD_UTF8_PICKLE)
    load = {"submission": load_submission, "prediction": load_predictions}[reader]
    with pytest.raises(BadInputError, match=f"bad.pkl: not a readable {reader} pickle: 'utf-8' codec"):
        load(p)


@pytest.mark.parametrize("suffix", [".json", ".JSON"])
def test_json_or_pickle_reads_by_suffix(tmp_path, suffix):
    from moviessl.errors import BadInputError
    from moviessl.utils.safe_pickle import load_json_or_pickle

    p = tmp_path / f"x{suffix}"
    p.write_text('{"a": [1, 2]}', encoding="utf-8-sig")  # a BOM, as Windows editors write
    assert load_json_or_pickle(p, "thing") == {"a": [1, 2]}
    p.write_text('{"a": ' + "9" * 5000 + "}")  # past Python's int digit limit: ValueError
    with pytest.raises(BadInputError, match=rf"x\{suffix}: invalid JSON: .*digit"):
        load_json_or_pickle(p, "thing")
    q = tmp_path / "x.pkl"
    q.write_bytes(pickle.dumps({"a": [1, 2]}, protocol=2))
    assert load_json_or_pickle(q, "thing") == {"a": [1, 2]}
    q.write_bytes(b"not a pickle")
    with pytest.raises(BadInputError, match="x.pkl: not a readable thing pickle"):
        load_json_or_pickle(q, "thing")
