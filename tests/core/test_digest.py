import numpy as np
import torch

from moviessl.utils.digest import content_digest, name_size


def test_content_digest_reads_files_arrays_and_structures(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text("[1, 2]")
    b.write_text("[1, 2]")
    # a file by its contents, not its name or place; a string is a string
    assert content_digest(a) == content_digest(b) != content_digest(str(a))
    b.write_text("[1, 3]")
    assert content_digest(a) != content_digest(b)
    assert content_digest(tmp_path / "missing") != content_digest(a)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    # arrays and tensors by dtype, shape and bytes; a view is its values
    assert content_digest(x) == content_digest(torch.from_numpy(x)) == content_digest(x.T.copy().T)
    assert content_digest(x) != content_digest(x.reshape(3, 2)) != content_digest(x.astype(np.float64))
    y = x.copy()
    y[1, 2] += 1e-6
    assert content_digest(x) != content_digest(y)
    # structures item by item: key order does not matter, nesting does
    assert content_digest({"a": 1, "b": [1, 2]}) == content_digest({"b": [1, 2], "a": 1})
    assert content_digest([[1], 2]) != content_digest([1, [2]]) != content_digest(["1", 2])


def test_name_size(tmp_path):
    p = tmp_path / "v_feats.npy"
    p.write_bytes(b"abc")
    assert name_size(p) == ("v_feats.npy", 3) and name_size(tmp_path / "gone.npy") == ("gone.npy", -1)


def test_content_digest_refuses_what_it_cannot_hash_by_content():
    """An object's repr holds its address: such a digest would differ in every process (and rank)."""
    import pytest

    assert content_digest({"b", "a"}) == content_digest({"a", "b"})
    assert content_digest(np.float32(1.5)) == content_digest(1.5)
    assert content_digest(torch.ones(2, dtype=torch.bfloat16)) == content_digest(torch.ones(2))
    with pytest.raises(TypeError, match="object"):
        content_digest([object()])
