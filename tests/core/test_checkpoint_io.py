import pickle
import re
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from moviessl.checkpoint import arch_spec, build_from_checkpoint, load_checkpoint, save_checkpoint
from moviessl.errors import BadInputError
from moviessl.utils.io import atomic_save_npy, atomic_write


class _FullDisk:
    """A file whose every write fails as a full disk does (the file is closed as usual)."""

    def __init__(self, f):
        self.f = f

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()

    def write(self, b):
        import errno

        raise OSError(errno.ENOSPC, "No space left on device")


def _small_backbone(path):
    """A tiny stage-"backbone" checkpoint (a ~100 kB file)."""
    from moviessl.models.slowd import build_slowd

    kw = dict(widths=[8, 8, 16, 16], stem_width=8)
    return save_checkpoint(
        path,
        stage="backbone",
        arch=arch_spec("moviessl.models.slowd:build_slowd", preset="slowd_cpu", **kw),
        state_dict=build_slowd("slowd_cpu", **kw).state_dict(),
    )


def build_mlp(d_in: int, d_out: int) -> nn.Module:
    return nn.Sequential(nn.Linear(d_in, d_out), nn.ReLU())


def test_roundtrip(tmp_path, monkeypatch):
    monkeypatch.setenv("MOVIESSL_TRUST_CHECKPOINTS", "1")  # build_mlp is this module's, not moviessl's
    m = build_mlp(4, 3)
    p = save_checkpoint(
        tmp_path / "m.pt",
        stage="context",  # not the stage most tests write: the file keeps the one it is given
        arch=arch_spec(f"{__name__}:build_mlp", d_in=4, d_out=3),
        state_dict=m.state_dict(),
        config={"a": 1},
        meta={"out_dim": 3},
    )
    obj = load_checkpoint(p, stage="context")
    assert obj["stage"] == "context" and obj["meta"]["out_dim"] == 3 and obj["config"] == {"a": 1}
    m2 = build_from_checkpoint(p)
    x = torch.randn(2, 4)
    assert torch.equal(m(x), m2(x)) and not m2.training
    with pytest.raises(BadInputError, match="from stage 'context', expected backbone"):
        load_checkpoint(p, stage="backbone")
    # weights that are NaN somewhere (a diverged run) are one line naming the file, not a model giving NaN
    sd = m.state_dict()
    sd["0.bias"] = torch.tensor([0.0, float("nan"), 0.0])
    bad = save_checkpoint(tmp_path / "nan.pt", stage="context", arch=obj["arch"], state_dict=sd)
    with pytest.raises(BadInputError, match=r"nan\.pt.*1 weight tensor\(s\) hold NaN/inf \(first: 0\.bias\)"):
        build_from_checkpoint(bad)


def test_bad_checkpoints(tmp_path):
    with pytest.raises(BadInputError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    run = tmp_path / "run"  # a run's folder for its model.pt: it exists, so "not found" misled
    run.mkdir()
    with pytest.raises(BadInputError, match=r"run: a folder, not a checkpoint file$"):
        load_checkpoint(run)
    torch.save({}, run / "model.pt")
    with pytest.raises(BadInputError, match=r"run: a folder, not a checkpoint file \(its model\.pt\?\)"):
        load_checkpoint(run)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    with pytest.raises(BadInputError, match="not a readable checkpoint"):
        load_checkpoint(bad)
    empty = tmp_path / "empty.pt"  # a copy that failed, a `touch`: was "(EOFError: Ran out of input)"
    empty.write_bytes(b"")
    with pytest.raises(BadInputError, match=r"empty\.pt: not a readable checkpoint \(empty or truncated file\)"):
        load_checkpoint(empty)
    (tmp_path / "plain.pkl").write_bytes(pickle.dumps({"a": 1}, protocol=4))  # a pickle, not torch's
    with warnings.catch_warnings():  # torch's "Detected pickle protocol 4" warning came before the one line
        warnings.simplefilter("error")
        with pytest.raises(BadInputError, match=r"plain\.pkl: not a readable checkpoint \(not a torch file\)"):
            load_checkpoint(tmp_path / "plain.pkl")
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(BadInputError, match="not a moviessl checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_checkpoints_this_version_cannot_rebuild_are_one_line_naming_the_file(tmp_path, monkeypatch):
    """A Lightning .ckpt was 'not a moviessl checkpoint' without saying what it is; a newer format, a
    builder this version lacks and a checkpoint without a stage were tracebacks (KeyError, TypeError,
    ModuleNotFoundError) deep in the rebuild."""
    import moviessl

    monkeypatch.setenv("MOVIESSL_TRUST_CHECKPOINTS", "1")  # builders outside moviessl's own

    p = save_checkpoint(
        tmp_path / "m.pt",
        stage="toy",
        arch=arch_spec(f"{__name__}:build_mlp", d_in=4, d_out=3),
        state_dict=build_mlp(4, 3).state_dict(),
    )
    good = torch.load(p, weights_only=False)
    variants = {
        "Lightning training checkpoint": {"state_dict": good["state_dict"], "pytorch-lightning_version": "2.4.0"},
        "checkpoint format 4": {**good, "format_version": 4, "arch": {**good["arch"], "kwargs": {"new": 1}}},
        "no 'stage' or 'arch' entry": {k: v for k, v in good.items() if k != "stage"},
        "builder 'moviessl.models.txe_v2:build_txe' is not in moviessl": {
            **good,
            "arch": {"builder": "moviessl.models.txe_v2:build_txe", "kwargs": {}},
        },
    }
    variants["builder 'moviessl.models.txe:build_txe_v2' is not in"] = {
        **good,
        "arch": {"builder": "moviessl.models.txe:build_txe_v2", "kwargs": {}},
    }
    for i, (problem, obj) in enumerate(variants.items()):
        torch.save(obj, tmp_path / f"v{i}.pt")
        with pytest.raises(BadInputError, match=re.escape(f"v{i}.pt: ") + ".*" + re.escape(problem)):
            moviessl.load(tmp_path / f"v{i}.pt")
    # a builder that is there but whose module cannot import what it needs (a broken install) is not
    # the checkpoint's fault: its own error, not "not in moviessl"
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / "broken_builder.py").write_text("import no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))
    torch.save({**good, "arch": {"builder": "broken_builder:build", "kwargs": {}}}, tmp_path / "b.pt")
    with pytest.raises(ModuleNotFoundError, match="no_such_dependency_xyz"):
        moviessl.load(tmp_path / "b.pt")


def test_weights_or_an_arch_that_do_not_fit_are_one_line_naming_the_file(tmp_path, monkeypatch):
    """A hand-edited (or mismatched) checkpoint: torch's load_state_dict error is many lines and names
    no file; a builder given kwargs it does not take was a TypeError traceback."""
    monkeypatch.setenv("MOVIESSL_TRUST_CHECKPOINTS", "1")  # build_mlp is this module's, not moviessl's
    m = build_mlp(4, 3)
    arch = arch_spec(f"{__name__}:build_mlp", d_in=4, d_out=3)
    sd = m.state_dict()
    cases = {
        "missing": ({k: v for k, v in sd.items() if k != "0.bias"}, arch, "1 missing, e.g. 0.bias"),
        "extra": ({**sd, "head.w": torch.zeros(1)}, arch, "1 unexpected, e.g. head.w"),
        "shape": (
            {**sd, "0.weight": torch.zeros(5, 4)},
            arch,
            "1 of another shape, e.g. 0.weight \\(5, 4\\) for \\(3, 4\\)",
        ),
        "arch": (sd, {**arch, "kwargs": {**arch["kwargs"], "width": 2}}, "arch cannot be built here \\(TypeError"),
    }
    for name, (state, a, why) in cases.items():
        p = save_checkpoint(tmp_path / f"{name}.pt", stage="backbone", arch=a, state_dict=state)
        for given in (p, load_checkpoint(p)):  # a path, or what load_checkpoint read from it
            with pytest.raises(BadInputError, match=why) as e:
                build_from_checkpoint(given)
            assert str(e.value).startswith(str(p)) and "\n" not in str(e.value)
    # a TxE saved before its input statistics existed: the module upgrades such state dicts while
    # loading (its _load_from_state_dict), so a comparison of the keys beforehand refused a good file
    from moviessl.models import build_txe

    kw = dict(preset="txe_cpu", in_dim=8, depth=1)
    old = {k: v for k, v in build_txe(**kw).state_dict().items() if not k.startswith("input_norm.")}
    p = save_checkpoint(
        tmp_path / "old_txe.pt", stage="context", arch=arch_spec("moviessl.models.txe:build_txe", **kw), state_dict=old
    )
    assert not bool(build_from_checkpoint(p).input_norm.is_set)
    obj = load_checkpoint(save_checkpoint(tmp_path / "ok.pt", stage="backbone", arch=arch, state_dict=sd))
    again = save_checkpoint(tmp_path / "again.pt", stage="backbone", arch=obj["arch"], state_dict=sd)
    assert "_loaded_from" not in torch.load(again, weights_only=False)  # the file name is not saved along


def _mark(path):
    """What a hostile pickle calls while being loaded: here only a file that says it ran."""
    with open(path, "w") as f:
        f.write("ran")
    return path


def _hostile(marker):
    """An object whose unpickling writes ``marker`` (by ``exec``, a builtin: nothing to import)."""
    return type("Hostile", (), {"__reduce__": lambda self: (exec, (f"open({str(marker)!r}, 'w').write('ran')",))})()


def test_a_pickle_that_would_run_code_is_refused_unless_trusted(tmp_path, monkeypatch):
    """A model.pt was read with torch.load(weights_only=False): a hostile pickle ran its code on load."""
    import moviessl

    monkeypatch.delenv("MOVIESSL_TRUST_CHECKPOINTS", raising=False)
    marker = tmp_path / "ran.txt"
    obj = torch.load(_small_backbone(tmp_path / "good.pt"), weights_only=True)
    torch.save({**obj, "meta": {"note": _hostile(marker)}}, tmp_path / "evil.pt")
    for load in (load_checkpoint, build_from_checkpoint, moviessl.load):
        with pytest.raises(BadInputError) as e:
            load(tmp_path / "evil.pt")
        assert str(e.value) == (
            f"{tmp_path / 'evil.pt'}: it names exec to call or rebuild when loaded, which could "
            "run code; load it only if you trust its source: MOVIESSL_TRUST_CHECKPOINTS=1 (trust=True in Python)"
        )
        assert not marker.exists()
    assert "note" in load_checkpoint(tmp_path / "evil.pt", trust=True)["meta"] and marker.exists()  # it ran
    marker.unlink()
    monkeypatch.setenv("MOVIESSL_TRUST_CHECKPOINTS", "1")
    assert moviessl.load(tmp_path / "evil.pt").stage == "backbone" and marker.exists()
    monkeypatch.setenv("MOVIESSL_TRUST_CHECKPOINTS", "maybe")  # not silently read as "no"
    with pytest.raises(BadInputError, match=r"^MOVIESSL_TRUST_CHECKPOINTS: 'maybe' is neither 1 nor 0$"):
        load_checkpoint(tmp_path / "good.pt")


def test_a_builder_outside_moviessl_networks_is_refused_unless_trusted(tmp_path, monkeypatch):
    """A checkpoint's arch named any importable function, which loading called with the file's
    arguments; a user's own network still loads with the opt-in."""
    import moviessl

    monkeypatch.delenv("MOVIESSL_TRUST_CHECKPOINTS", raising=False)
    m = build_mlp(4, 3)
    own = save_checkpoint(
        tmp_path / "own.pt",
        stage="toy",
        arch=arch_spec(f"{__name__}:build_mlp", d_in=4, d_out=3),
        state_dict=m.state_dict(),
    )
    marker = tmp_path / "ran.txt"
    called = save_checkpoint(  # a moviessl function that is no network: it writes the file it is given
        tmp_path / "writes.pt",
        stage="toy",
        arch=arch_spec("moviessl.utils.io:atomic_write_text", path=str(marker), text="ran"),
        state_dict={},
    )
    nested = save_checkpoint(  # a moviessl task model whose backbone arch is someone else's builder
        tmp_path / "nested.pt",
        stage="verb",
        arch=arch_spec(
            "moviessl.tasks.vidsitu.verb:build_verb_model",
            in_dim=4,
            num_verbs=2,
            backbone_arch=arch_spec(f"{__name__}:_mark", path=str(marker)),
        ),
        state_dict={},
    )
    for p, builder in (
        (own, f"{__name__}:build_mlp"),
        (called, "moviessl.utils.io:atomic_write_text"),
        (nested, f"{__name__}:_mark"),
    ):
        for load in (load_checkpoint, build_from_checkpoint, moviessl.load):
            with pytest.raises(BadInputError) as e:
                load(p)
            assert str(e.value) == (
                f"{p}: its arch names the builder '{builder}', not one of moviessl {moviessl.__version__}'s "
                "networks, and loading calls it with the file's arguments; load it only if you trust its "
                "source: MOVIESSL_TRUST_CHECKPOINTS=1 (trust=True in Python)"
            )
        # a mapping read without load_checkpoint (torch.load alone) is checked when built, too
        with pytest.raises(BadInputError, match=re.escape(f"the builder '{builder}', not one of moviessl")):
            build_from_checkpoint(torch.load(p, weights_only=True))
    assert not marker.exists()
    # a newer moviessl's network is said to be missing here, not to be a risk
    newer = tmp_path / "newer.pt"
    torch.save({**torch.load(own, weights_only=True), "arch": arch_spec("moviessl.models.txe:build_txe_v2")}, newer)
    with pytest.raises(BadInputError, match=r"builder 'moviessl\.models\.txe:build_txe_v2' is not in moviessl"):
        load_checkpoint(newer)
    x = torch.randn(2, 4)
    assert torch.equal(build_from_checkpoint(own, trust=True)(x), m(x))
    monkeypatch.setenv("MOVIESSL_TRUST_CHECKPOINTS", "1")
    assert torch.equal(moviessl.load(own).model(x), m(x))


def test_numpy_values_in_meta_load_without_the_opt_in(tmp_path, monkeypatch):
    """Metrics a writer left as numpy scalars or arrays are data, not code: no opt-in needed."""
    monkeypatch.delenv("MOVIESSL_TRUST_CHECKPOINTS", raising=False)
    obj = torch.load(_small_backbone(tmp_path / "b.pt"), weights_only=True)
    meta = {"acc": np.float64(0.5), "n": np.int64(3), "ok": np.bool_(True), "ids": np.arange(3), "dt": np.dtype("f4")}
    torch.save({**obj, "meta": meta}, tmp_path / "np.pt")
    got = load_checkpoint(tmp_path / "np.pt")["meta"]
    assert got["acc"] == 0.5 and got["n"] == 3 and got["ok"] and got["ids"].tolist() == [0, 1, 2]
    assert got["dt"] == np.dtype("f4")
    # written under the other numpy (numpy 1 pickles its scalars under numpy.core, numpy 2 numpy._core)
    import zipfile

    names = [b"numpy._core.multiarray", b"numpy.core.multiarray"]
    with zipfile.ZipFile(tmp_path / "np.pt") as z:
        parts = {i.filename: z.read(i.filename) for i in z.infolist()}
    pkl = next(n for n in parts if n.endswith("data.pkl"))
    here = next(n for n in names if n in parts[pkl])
    parts[pkl] = parts[pkl].replace(here, names[1 - names.index(here)])  # protocol 2: text GLOBAL lines
    with zipfile.ZipFile(tmp_path / "other.pt", "w", zipfile.ZIP_STORED) as z:
        for n, data in parts.items():
            z.writestr(n, data)
    assert load_checkpoint(tmp_path / "other.pt")["meta"]["acc"] == 0.5


def test_a_format_version_that_is_not_a_whole_number_is_one_line(tmp_path):
    """int(format_version) traced back on a hand-edited "3a" or None and read 2.5 as format 2."""
    obj = torch.load(_small_backbone(tmp_path / "b.pt"), weights_only=True)
    for i, v in enumerate(("3a", None, 2.5, True)):
        torch.save({**obj, "format_version": v}, tmp_path / f"v{i}.pt")
        with pytest.raises(BadInputError) as e:
            load_checkpoint(tmp_path / f"v{i}.pt")
        assert str(e.value) == f"{tmp_path / f'v{i}.pt'}: its format_version {v!r} is not a whole number"


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    p = tmp_path / "x.npy"
    atomic_save_npy(p, np.arange(3))

    def boom(f):
        f.write(b"partial")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(p, boom)
    assert np.load(p).tolist() == [0, 1, 2]
    assert [q.name for q in tmp_path.iterdir()] == ["x.npy"]  # no temp file left behind


def test_atomic_files_get_normal_permissions(tmp_path):
    import os

    p = atomic_save_npy(tmp_path / "f.npy", np.zeros(2))
    mask = os.umask(0)
    os.umask(mask)
    assert (p.stat().st_mode & 0o777) == (0o666 & ~mask)


def _as_written_by(version, path, **fields):
    """A checkpoint file as format ``version`` wrote it: its arch exactly as given (not pinned)."""
    obj = {"format": "moviessl", "format_version": version, "version": "old", "config": {}, "meta": {}}
    torch.save({**obj, **fields}, path)
    return path


def test_format_1_checkpoints_rebuild_the_layers_they_were_trained_with(tmp_path):
    """Checkpoints written before the TxE / TxD / OT layer settings (format 1) name only the preset; the
    paper presets' layers changed (ReLU, no inner dropout), so such a checkpoint gets the settings it
    was built with then: GELU, ``dropout`` on attention and inside the FFN."""
    from moviessl.checkpoint import build_from_checkpoint, load_checkpoint
    from moviessl.models.txe import build_txe

    old_net = build_txe("txe_paper", in_dim=8, dim=32, heads=4, mlp_dim=64, activation="gelu", attn_dropout=0.1)
    arch = {
        "builder": "moviessl.models.txe:build_txe",
        "kwargs": dict(preset="txe_paper", in_dim=8, dim=32, heads=4, mlp_dim=64),
    }
    p = _as_written_by(1, tmp_path / "txe.pt", stage="context", arch=arch, state_dict=old_net.state_dict())
    m = build_from_checkpoint(p)
    assert isinstance(m.blocks[0].mlp[1], torch.nn.GELU) and m.blocks[0].attn.dropout == 0.1
    x = torch.randn(2, 5, 8)
    assert torch.allclose(m(x), old_net.eval()(x))
    srl = {"builder": "moviessl.tasks.srl:build_srl_model", "kwargs": {"txd_preset": "txd_paper", "txe_arch": arch}}
    up = load_checkpoint(_as_written_by(1, tmp_path / "s.pt", stage="srl", arch=srl, state_dict={}))["arch"]
    assert {k: up["kwargs"]["txd_overrides"][k] for k in ("activation", "attn_dropout", "ffn_dropout")} == {
        "activation": "gelu",
        "attn_dropout": None,
        "ffn_dropout": None,
    }
    assert up["kwargs"]["txe_arch"]["kwargs"]["activation"] == "gelu"
    # format 2 named the same layers by the preset alone: they are the presets' (FAIRSEQ) layers
    up = load_checkpoint(_as_written_by(2, tmp_path / "s2.pt", stage="srl", arch=srl, state_dict={}))["arch"]
    assert up["kwargs"]["txd_overrides"]["activation"] == "relu"
    assert up["kwargs"]["txe_arch"]["kwargs"]["activation"] == "relu"


@pytest.mark.parametrize(
    "builder, table, kwargs",
    [
        ("moviessl.models.slowd:build_slowd", "moviessl.models.slowd:SLOWD_PRESETS", {"preset": "slowd_cpu"}),
        ("moviessl.models.txe:build_txe", "moviessl.models.txe:TXE_PRESETS", {"preset": "txe_cpu", "in_dim": 8}),
        (
            "moviessl.models.object_transformer:build_object_transformer",
            "moviessl.models.object_transformer:OT_PRESETS",
            {"preset": "ot_cpu", "in_dim": 8, "num_outputs": 3},
        ),
        (
            "moviessl.tasks.lvu.task:build_lvu_model",
            "moviessl.models.object_transformer:OT_PRESETS",
            {"preset": "ot_cpu", "in_dim": 8, "num_outputs": 3},
        ),
    ],
)
def test_checkpoints_rebuild_their_network_after_the_preset_table_changes(
    tmp_path, monkeypatch, builder, table, kwargs
):
    """A checkpoint holds its preset's values (format 3): editing the preset table later -- a wider
    layer, other dropout -- does not change what an existing checkpoint rebuilds."""
    import importlib

    from moviessl.checkpoint import arch_spec, build_arch, build_from_checkpoint, save_checkpoint

    arch = arch_spec(builder, **kwargs)
    torch.manual_seed(0)
    net = build_arch(arch)
    p = save_checkpoint(tmp_path / "m.pt", stage="x", arch=arch, state_dict=net.state_dict())
    module_name, _, table_name = table.partition(":")
    presets = getattr(importlib.import_module(module_name), table_name)
    edited = dict(presets[kwargs["preset"]])
    for k, v in edited.items():  # every numeric setting changed: widths double, rates move
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        edited[k] = v * 2 if isinstance(v, int) else v + 0.25
    monkeypatch.setitem(presets, kwargs["preset"], edited)
    with pytest.raises(Exception):  # the edited table builds another network: the test has teeth
        build_arch(arch).load_state_dict(net.state_dict())
    m = build_from_checkpoint(p)
    assert m.state_dict().keys() == net.state_dict().keys()
    assert repr(m) == repr(net.eval())


def test_srl_checkpoints_pin_the_txd_preset_and_the_nested_archs(tmp_path, monkeypatch):
    from moviessl.checkpoint import load_checkpoint, save_checkpoint
    from moviessl.models import txd, txe

    txe_arch = {"builder": "moviessl.models.txe:build_txe", "kwargs": {"preset": "txe_cpu", "in_dim": 8}}
    srl = {
        "builder": "moviessl.tasks.vidsitu.srl:build_srl_model",
        "kwargs": {
            "in_dim": 8,
            "vocab_size": 20,
            "txd_preset": "txd_cpu",
            "txd_overrides": {"depth": 1},
            "txe_arch": txe_arch,
        },
    }
    p = save_checkpoint(tmp_path / "s.pt", stage="srl", arch=srl, state_dict={})
    monkeypatch.setitem(txd.TXD_PRESETS, "txd_cpu", {**txd.TXD_PRESETS["txd_cpu"], "dim": 7, "dropout": 0.5})
    monkeypatch.setitem(txe.TXE_PRESETS, "txe_cpu", {**txe.TXE_PRESETS["txe_cpu"], "dim": 7})
    kw = load_checkpoint(p)["arch"]["kwargs"]
    assert kw["txd_overrides"]["depth"] == 1  # the run's override wins over the preset's value
    assert kw["txd_overrides"]["dim"] == 64 and kw["txd_overrides"]["dropout"] == 0.1
    assert kw["txe_arch"]["kwargs"]["dim"] == 128 and kw["txe_arch"]["kwargs"]["preset"] == "txe_cpu"
    assert torch.load(p, weights_only=False)["format_version"] == 3


def test_chunks_are_written_as_they_come_and_a_source_error_stays_itself(tmp_path, monkeypatch):
    """``atomic_write_from``: an array written a chunk at a time loads whole; an error of the source
    (a video that vanished) is that error, one of the disk an OSError naming the file written; neither
    leaves a file behind."""
    import errno

    import moviessl.utils.io as uio
    from moviessl.utils.io import atomic_write_from, write_npy_chunks

    a = np.arange(30, dtype=np.uint8).reshape(10, 3)
    npy = lambda f, chunks: write_npy_chunks(f, chunks, 10)  # noqa: E731
    assert atomic_write_from(tmp_path / "a.npy", (a[i : i + 4] for i in range(0, 10, 4)), npy) == (3,)
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), a)
    with pytest.raises(ValueError, match="9 rows written, 10 announced"):
        atomic_write_from(tmp_path / "b.npy", [a[:9]], lambda f, c: write_npy_chunks(f, c, 10))

    def vanishing():
        yield a[:4]
        raise FileNotFoundError(errno.ENOENT, "video vanished", "film.mp4")

    with pytest.raises(FileNotFoundError) as e:
        atomic_write_from(tmp_path / "c.npy", vanishing(), npy)
    assert e.value.filename == "film.mp4"
    try:  # also while another error is being handled (it must not pass for the write's)
        raise OSError(errno.EIO, "an earlier error")
    except OSError:
        with pytest.raises(FileNotFoundError):
            atomic_write_from(tmp_path / "c.npy", vanishing(), npy)

    closed = []

    def source():
        try:
            yield a[:4]
            yield a[4:]
        finally:
            closed.append(True)

    with pytest.raises(ValueError, match="after 0 of 3 rows"):  # the write fails: the source is let go
        atomic_write_from(tmp_path / "e.npy", source(), lambda f, c: write_npy_chunks(f, c, 3))
    assert closed == [True]

    orig = uio._open_fd
    monkeypatch.setattr(uio, "_open_fd", lambda fd, mode, path: _FullDisk(orig(fd, mode, path)))
    with pytest.raises(OSError) as e:
        atomic_write_from(tmp_path / "d.npy", [a], npy)
    assert e.value.filename == str(tmp_path / "d.npy") and e.value.errno == errno.ENOSPC
    assert sorted(q.name for q in tmp_path.iterdir()) == ["a.npy"]


def test_a_write_that_swallows_the_source_error_commits_nothing(tmp_path):
    """A ``write`` that catches every error (a writer that logs and returns) took the source's error
    for its own and returned: ``atomic_write`` renamed the partial file into place, and only then was
    the source's error raised, leaving a truncated file where the caller's resume sees a finished one."""
    import errno

    from moviessl.utils.io import atomic_write_from

    def vanishing():
        yield b"part"
        raise FileNotFoundError(errno.ENOENT, "video vanished", "film.mp4")

    def swallowing(f, chunks):
        try:
            for c in chunks:
                f.write(c)
        except BaseException:
            pass

    with pytest.raises(FileNotFoundError):
        atomic_write_from(tmp_path / "p.bin", vanishing(), swallowing)
    assert list(tmp_path.iterdir()) == []


def test_the_checkpoint_writer_pickles_for_ddp_spawn():
    """ddp_spawn pickles the trainer with its plugins: a class defined inside a function failed with
    "Can't pickle local object" before any process started."""
    import pickle

    from moviessl.training import AtomicCheckpointIO, atomic_checkpoint_io

    assert isinstance(pickle.loads(pickle.dumps(atomic_checkpoint_io())), AtomicCheckpointIO)


def test_a_folder_that_refuses_the_temporary_file_is_an_error_naming_the_target(tmp_path, monkeypatch):
    """A read-only folder (or one out of inodes or quota) fails when the temporary file is created:
    the error named that hidden ``.x.json.abc123.tmp`` instead of the file the user asked for."""
    import errno
    import tempfile

    from moviessl.utils.io import atomic_write_json

    def refuse(prefix="", suffix="", dir=None):
        raise PermissionError(errno.EACCES, "Permission denied", f"{dir}/{prefix}abc123{suffix}")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(OSError) as e:
        atomic_write_json(tmp_path / "x.json", {"a": 1})
    assert e.value.filename == str(tmp_path / "x.json") and e.value.errno == errno.EACCES
    assert "nothing was changed" in str(e.value)


def test_a_journal_on_a_full_disk_is_an_error_naming_it(tmp_path, monkeypatch):
    """``append_line``'s write failing (a full disk) raised the bare OSError of ``write``, which names
    no file: the CLI printed "No space left on device: [Errno 28] ..." without saying which journal."""
    import errno

    import moviessl.utils.io as uio
    from moviessl.errors import os_error_line

    journal = tmp_path / "journal.rank0.jsonl"
    orig = uio._open_fd
    monkeypatch.setattr(uio, "_open_fd", lambda fd, mode, path: _FullDisk(orig(fd, mode, path)))
    with pytest.raises(OSError) as e:
        uio.append_line(journal, '{"id": "v1"}')
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(journal)
    assert os_error_line(e.value).startswith(f"{journal}: ") and "No space left on device" in os_error_line(e.value)


def test_a_target_that_is_a_symlink_is_written_where_it_points(tmp_path):
    """A result file that is a symlink (features kept on another disk) was replaced by a regular file
    beside the link, and the file it pointed to kept the old contents; ``open(path, "w")`` writes
    through the link. Also a dangling link (the file not written yet) and ``clobber=False``."""
    from moviessl.utils.io import atomic_write_text

    disk = tmp_path / "disk"
    disk.mkdir()
    (disk / "a.npy").write_bytes(b"old")
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.npy").symlink_to(disk / "a.npy")
    assert atomic_save_npy(out / "a.npy", np.arange(3)) == out / "a.npy"
    assert (out / "a.npy").is_symlink() and np.load(disk / "a.npy").tolist() == [0, 1, 2]
    (out / "b.json").symlink_to(disk / "b.json")  # dangling
    atomic_write_text(out / "b.json", "{}")
    assert (out / "b.json").is_symlink() and (disk / "b.json").read_text() == "{}"
    (out / "c.npy").symlink_to(disk / "c.npy")
    atomic_save_npy(out / "c.npy", np.zeros(2), clobber=False)
    assert (out / "c.npy").is_symlink() and np.load(disk / "c.npy").tolist() == [0, 0]
    assert sorted(q.name for q in out.iterdir()) == ["a.npy", "b.json", "c.npy"]
    assert sorted(q.name for q in disk.iterdir()) == ["a.npy", "b.json", "c.npy"]  # no temp files left


def test_a_rewritten_file_keeps_its_permissions(tmp_path):
    """A write in place keeps an existing file's mode; the rename gave every rewrite the umask's mode,
    so a result made private (chmod 600) became world-readable on the next run."""
    import os

    p = atomic_save_npy(tmp_path / "f.npy", np.zeros(2))
    os.chmod(p, 0o600)
    atomic_save_npy(p, np.ones(2))
    assert (p.stat().st_mode & 0o777) == 0o600 and np.load(p).tolist() == [1, 1]


def test_a_preset_this_version_lacks_is_one_line_naming_the_checkpoint(tmp_path):
    """A checkpoint of a newer moviessl with a preset this one lacks: the builder's own error named
    only the preset ("slowd_r101: unknown Slow-D preset ..."; TxD's named nothing at all), so the
    user was not told which of the checkpoints given was the problem."""
    from moviessl.api import load

    for stage, arch in {
        "backbone": arch_spec("moviessl.models.slowd:build_slowd", preset="slowd_r101"),
        "srl": arch_spec("moviessl.tasks.vidsitu.srl:build_srl_model", in_dim=8, vocab_size=10, txd_preset="txd_huge"),
    }.items():
        p = tmp_path / f"{stage}.pt"
        torch.save({"format": "moviessl", "format_version": 3, "stage": stage, "arch": arch, "state_dict": {}}, p)
        for build in (build_from_checkpoint, load):
            with pytest.raises(BadInputError, match="its arch cannot be built here .*unknown") as e:
                build(p)
            assert str(e.value).startswith(f"{p}: ") and "\n" not in str(e.value)


def test_a_checkpoint_that_cannot_be_read_is_not_called_corrupt(tmp_path, monkeypatch):
    """Any OSError while loading was reported as "truncated or corrupt file": a checkpoint the user
    may not read (permissions) or a disk error sent them to download or retrain a good file."""
    import errno

    p = _small_backbone(tmp_path / "model.pt")

    def denied(f, *a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", str(f))

    monkeypatch.setattr(torch, "load", denied)
    with pytest.raises(BadInputError) as e:
        load_checkpoint(p)
    assert str(e.value) == f"{p}: not a readable checkpoint (Permission denied)"


def test_a_checkpoint_cut_short_near_its_end_is_called_truncated(tmp_path):
    """torch's reader fails on a file cut a few bytes before its end with OSError EINVAL; that is
    the file's fault, not the machine's ("Invalid argument" sent the user looking at the disk)."""
    p = _small_backbone(tmp_path / "model.pt")
    data = p.read_bytes()
    for cut in (len(data) // 3, len(data) // 2, len(data) - 10, 100):
        p.write_bytes(data[:cut])
        with pytest.raises(BadInputError, match=r"not a readable checkpoint \(truncated or corrupt file\)"):
            load_checkpoint(p)


def test_an_older_tuned_backbone_says_the_clips_and_frames_it_was_tuned_on(tmp_path):
    """A backbone.pt written by ``finetune vidsitu --videos`` before its meta recorded how it was
    tuned copied its source's ``meta.input`` and had no ``tuned_resize``: extract read it with the
    source's clips, centre-cropped, though its saved config says data.num_frames 8 / stride 2 and
    squashed frames. Loading now takes both from that config; other backbones are left as they are."""
    from moviessl.features.extract import resize_mode

    obj = torch.load(_small_backbone(tmp_path / "source.pt"), weights_only=False)
    source_input = {"num_frames": 16, "stride": 4, "short_side": 32, "crop": 32}
    obj["meta"] = {"input": source_input, "method": "cvrl+verb", "out_dim": 16}
    obj["config"] = {"data": {"resize": "squash", "num_frames": 8, "stride": 2}, "verb": {}}
    torch.save(obj, tmp_path / "old_tuned.pt")
    meta = load_checkpoint(tmp_path / "old_tuned.pt", stage="backbone")["meta"]
    assert meta["input"] == {**source_input, "num_frames": 8, "stride": 2}
    assert resize_mode(meta, None, "old_tuned.pt", "--resize") == "squash"
    obj["config"] = {"data": {"num_frames": None, "stride": None}}  # before data.resize: a crop
    torch.save(obj, tmp_path / "older_tuned.pt")
    meta = load_checkpoint(tmp_path / "older_tuned.pt", stage="backbone")["meta"]
    assert meta["input"] == source_input and meta["tuned_resize"] == "crop"
    obj["meta"]["method"] = "cvrl"  # a pretrained backbone: its config is the pretraining's
    obj["config"] = {"data": {"num_frames": 8, "resize": "squash"}}
    torch.save(obj, tmp_path / "pretrained.pt")
    meta = load_checkpoint(tmp_path / "pretrained.pt", stage="backbone")["meta"]
    assert meta["input"] == source_input and "tuned_resize" not in meta


def test_text_naming_a_non_ascii_path_met_under_a_non_utf8_locale_is_written(tmp_path):
    """Under LC_ALL=C with PYTHONUTF8=0 the folder '映画' given on the command line is the string of
    surrogate escapes os.fsdecode makes of its bytes; written into summary.md (finetune's table, after
    every seed had trained) it ended the job in a UnicodeEncodeError traceback, and every rerun."""
    from moviessl.utils.io import atomic_write_text

    name = "映画 é".encode()
    held = name.decode("ascii", "surrogateescape")  # what an ASCII locale's os.fsdecode gives
    atomic_write_text(tmp_path / "summary.md", f"runs in {held}/run\n")
    assert (tmp_path / "summary.md").read_bytes() == b"runs in " + name + b"/run\n"
