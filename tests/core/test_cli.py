import os
import subprocess
import sys

from moviessl import cli
from moviessl.errors import BadInputError, os_error_line


def run_as_command(monkeypatch, func) -> int:
    """``func`` as the command ``moviessl.cli.main`` runs (its error and signal handling included)."""
    parser = cli.build_parser

    def build():
        p = parser()
        p.set_defaults(func=func)
        return p

    monkeypatch.setattr(cli, "build_parser", build)
    return cli.main([])


def test_bad_input_is_one_line_exit_2(capsys, monkeypatch):
    def fail(args):
        raise BadInputError("/data/x.mp4", "truncated file\n(moov atom not found)")

    rc = run_as_command(monkeypatch, fail)
    err = capsys.readouterr().err
    assert rc == 2
    assert err.strip() == "moviessl: error: /data/x.mp4: truncated file (moov atom not found)"


def test_all_stages_register():
    # every stage module exists and registers its subcommand (nothing silently missing)
    import importlib

    for name in cli.STAGE_MODULES:
        assert hasattr(importlib.import_module(name), "add_parser"), name


def test_console_help():
    out = subprocess.run([sys.executable, "-m", "moviessl.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "probe" in out.stdout and "demo" in out.stdout


def test_demo_profiles_default_to_separate_folders(monkeypatch):
    import moviessl.demo as demo
    from moviessl.cli import main

    calls = []
    monkeypatch.setattr(demo, "run_demo", lambda out, **kw: calls.append((str(out), kw["profile"])))
    for argv in (["demo", "--quick"], ["demo"], ["demo", "--profile", "control"], ["demo", "--out", "x"]):
        assert main(argv) == 0
    assert calls == [
        ("runs/demo", "quick"),
        ("runs/demo_full", "full"),
        ("runs/demo_control", "control"),
        ("x", "full"),
    ]


def _subcommand(p, *names):
    for name in names:
        p = p._subparsers._group_actions[0].choices[name]
    return p


def test_overrides_may_sit_between_options(monkeypatch):
    # argparse takes one block of positionals; later KEY=VALUE tokens join the overrides in order
    seen = []
    parser = cli.build_parser
    argv = ["finetune", "vidsitu", "srl.epochs=3", "--task", "srl", "a.b=1", "--data-root", "d", "--out", "o"]
    argv += ["srl.epochs=4", "--", "z=2"]

    def build():
        p = parser()
        _subcommand(p, "finetune", "vidsitu").set_defaults(func=lambda args: seen.append(list(args.overrides)))
        return p

    monkeypatch.setattr(cli, "build_parser", build)
    assert cli.main(argv) == 0
    assert seen == [["srl.epochs=3", "a.b=1", "srl.epochs=4", "z=2"]]


def test_stray_word_or_option_still_refused(capsys):
    import pytest

    for argv, bad in (
        (["finetune", "vidsitu", "--task", "srl", "x=1", "--out", "o", "--data-root", "d", "stray"], "stray"),
        (["finetune", "vidsitu", "--task", "srl", "--out", "o", "--data-root", "d", "--bogus"], "--bogus"),
        (["probe", "video.mp4", "a=1"], "a=1"),  # a stage without overrides
    ):
        with pytest.raises(SystemExit) as e:
            cli.main(argv)
        assert e.value.code == 2
        assert f"unrecognized arguments: {bad}" in capsys.readouterr().err


class _FailsInWorker:
    """A data set whose item fails as a full cache disk does in a loader worker."""

    def __init__(self, error: OSError):
        self.error = error

    def __len__(self) -> int:
        return 1

    def __getitem__(self, i):
        raise self.error


def test_an_os_error_in_a_loader_worker_is_one_line_naming_its_file(capsys, monkeypatch):
    # torch re-raises a worker's error as ``type(msg)`` with the worker's traceback as its message:
    # no errno, no file, and the whole traceback was printed as the command's line
    import errno

    import torch

    cases = [
        (
            OSError(errno.ENOSPC, "cannot write (No space left on device); nothing was changed", "/c/v 1/é.npy"),
            "moviessl: error: /c/v 1/é.npy: cannot write (No space left on device); nothing was changed",
        ),
        (
            PermissionError(errno.EACCES, "Permission denied", "/d/it's.mp4"),
            "moviessl: error: /d/it's.mp4: Permission denied",
        ),
        (OSError(errno.EIO, "Input/output error"), None),
    ]
    for error, line in cases:

        def load(args, error=error):
            for _ in torch.utils.data.DataLoader(_FailsInWorker(error), batch_size=None, num_workers=1):
                pass

        rc = run_as_command(monkeypatch, load)
        err = capsys.readouterr().err
        assert rc == 2
        # the line the same error gives raised in the command's own process
        assert err.strip() == (line or f"moviessl: error: {os_error_line(error)}")


def test_python_m_moviessl_runs_the_command():
    """``torchrun --nproc-per-node=8 -m moviessl pretrain-backbone ...`` (a launcher that takes a
    module) stopped at once with "No module named moviessl.__main__": only ``-m moviessl.cli`` ran."""
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-m", "moviessl", "--version"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("moviessl ")


SIGTERMED_COMMAND = """
import sys, time
import torch
sys.path.insert(0, {tests!r})
from test_cli import run_as_command


class Slow(torch.utils.data.Dataset):
    def __len__(self):
        return 10_000

    def __getitem__(self, i):
        time.sleep(0.02)
        return i


def read(args):
    it = iter(torch.utils.data.DataLoader(Slow(), num_workers=2))
    next(it)
    print("reading", flush=True)
    for _ in it:
        pass


class Patch:
    def setattr(self, obj, name, value):
        setattr(obj, name, value)


sys.exit(run_as_command(Patch(), read))
"""


def test_a_sigterm_to_a_command_with_loader_workers_ends_on_its_line_without_a_traceback(tmp_path):
    """The loader workers die of the job's SIGTERM too (a scheduler signals the process group), and
    PyTorch's SIGCHLD handler raised their deaths at the interpreter's exit: a traceback after the
    'terminated' line."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    script = tmp_path / "cmd.py"
    script.write_text(SIGTERMED_COMMAND.format(tests=str(Path(__file__).parent)))
    p = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    assert p.stdout.readline().strip() == "reading"
    time.sleep(0.5)
    os.killpg(p.pid, signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 143
    assert err.strip().splitlines()[-1].startswith("moviessl: terminated") and "Traceback" not in err


def test_a_finished_command_ends_its_process_group_a_failed_one_leaves_it(monkeypatch, tmp_path):
    """Left to the interpreter's exit, gloo's threads freed their tensors during finalisation and a
    finished torchrun rank died of SIGABRT now and then (a finished job reported as failed); a failed
    command leaves the group alone, its peers may still be inside a collective."""
    import torch.distributed as dist

    def start():
        store = dist.FileStore(str(tmp_path / f"store{len(list(tmp_path.iterdir()))}"), 1)
        dist.init_process_group("gloo", store=store, rank=0, world_size=1)

    def fail(args):
        raise BadInputError("/data/x.mp4", "truncated")

    start()
    try:
        assert run_as_command(monkeypatch, fail) == 2
        assert dist.is_initialized()
    finally:
        dist.destroy_process_group()
    try:
        assert run_as_command(monkeypatch, lambda args: start()) == 0  # the command starts it, as Lightning does
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_a_process_group_the_caller_started_outlives_the_command(monkeypatch, tmp_path):
    """A script that started its own process group and ran a command through ``cli.main`` found the
    group gone after it ('Default process group has not been initialized' at its next collective)."""
    import torch
    import torch.distributed as dist

    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    try:
        assert run_as_command(monkeypatch, lambda args: 0) == 0
        assert dist.is_initialized()
        dist.all_reduce(torch.zeros(1))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _peer_worker(rank: int, port: int, out: str) -> None:
    import io
    import json
    import os
    import traceback

    import torch
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)

    def command(args):
        if rank == 1:
            raise BadInputError("/data/x_feats.npy", "truncated file")
        dist.all_reduce(torch.zeros(1))  # rank 0 waits for its peer in a collective

    parser = cli.build_parser

    def build():
        p = parser()
        p.set_defaults(func=command)
        return p

    cli.build_parser, err = build, io.StringIO()
    sys.stderr = err
    try:
        rc = cli.main([])
    except BaseException:
        rc = traceback.format_exc()
    with open(os.path.join(out, f"r{rank}.json"), "w") as f:
        json.dump({"rc": rc, "err": err.getvalue()}, f)
    os._exit(0)  # rank 1 leaves at once, as the failed command's process does


def test_a_process_left_in_a_collective_by_a_failed_peer_stops_with_the_peers_line(tmp_path):
    """One process of a multi-process job fails with bad input while another waits for it in a
    collective: gloo's 'Connection closed by peer' ended the waiting one in a traceback under the
    failed one's line, exit 1 (the exit code of a job under Lightning's launcher, whose rank 0 it
    was). It now stops with the failed process's line and exit code."""
    import json
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_peer_worker, args=(port, str(tmp_path)), nprocs=2, start_method="spawn")
    r0, r1 = (json.loads((tmp_path / f"r{r}.json").read_text()) for r in (0, 1))
    assert r1["rc"] == 2 and r1["err"].strip() == "moviessl: error: /data/x_feats.npy: truncated file"
    assert r0["rc"] == 2, r0
    assert r0["err"].startswith("moviessl: error: /data/x_feats.npy: truncated file (rank 1 of this job")


def test_a_failed_rank_0_stops_the_processes_lightnings_launcher_started(tmp_path):
    """Rank 0 of Lightning's own launcher failing outside ``fit`` (its export, scoring, a merge) left
    the ranks it started running on after the job had ended: under NCCL a rank waiting for it in a
    collective held its GPU until the process group's timeout (30 minutes). Lightning stops them only
    after a Ctrl-C in ``fit``; a failed command now does too."""
    import time
    from pathlib import Path

    from moviessl.dist import fresh_launch_env

    script = Path(__file__).with_name("rank0_fails_script.py")
    t0 = time.monotonic()
    cmd = [sys.executable, str(script), str(tmp_path)]
    p = subprocess.run(cmd, env=fresh_launch_env(), capture_output=True, text=True, timeout=240)
    assert p.returncode == 2, p.stderr[-3000:]
    assert "moviessl: error: " in p.stderr and "No space left on device" in p.stderr
    assert time.monotonic() - t0 < 50, p.stderr[-3000:]  # the pipe closes once rank 1 has gone too
    assert not (tmp_path / "rank1_went_on").exists()


def test_a_collectives_own_error_is_not_a_gone_peer(monkeypatch, tmp_path, capsys):
    """A collective's own failure (NCCL out of memory, say) with no peer's line in the store was
    reported as 'another process of this job has gone', exit 1, its message shown only under -v."""
    import pytest
    import torch.distributed as dist

    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    monkeypatch.setattr(cli, "_process_group", lambda min_size=2: dist)  # as one process of several
    oom = "NCCL error: unhandled cuda error, ncclUnhandledCudaError: Cuda failure 'out of memory'"

    def fail(args):
        raise dist.DistBackendError(oom)

    def peer_gone(args):
        raise dist.DistBackendError("NCCL error: remote process exited or there was a network error")

    try:
        with pytest.raises(dist.DistBackendError, match="out of memory"):
            run_as_command(monkeypatch, fail)
        assert run_as_command(monkeypatch, peer_gone) == 1
        assert "another process of this job has gone" in capsys.readouterr().err
        dist.distributed_c10d._get_default_store().set("moviessl/failed", "1 2 /x.npy: truncated")
        assert run_as_command(monkeypatch, fail) == 2  # a peer failed first: its line
        assert capsys.readouterr().err.startswith("moviessl: error: /x.npy: truncated (rank 1 of this job")
    finally:
        dist.destroy_process_group()


def test_a_multi_process_job_reports_once():
    """Every process of a torchrun launch runs the command: each printed the result (a script reading
    the JSON line got two). The process that speaks for the job (rank 0) reports."""
    from pathlib import Path

    from moviessl.dist import fresh_launch_env

    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--standalone", "--nproc-per-node=2", "-m", "moviessl.cli", "model-info", "txe_cpu"]
    env = {**fresh_launch_env(), "OMP_NUM_THREADS": "1"}
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert len(p.stdout.splitlines()) == 1 and p.stdout.startswith("{"), p.stdout


def test_a_process_that_does_not_speak_for_its_job_prints_no_result_and_draws_no_bar(capsys, caplog, monkeypatch):
    """Lightning's launcher starts rank 1 by running the command again (``LOCAL_RANK=1``): its result
    line, INFO lines and progress bars went to the console beside rank 0's. Its warnings still do, and
    the INFO lines a rank says of its own share."""
    import logging

    from moviessl.dist import EVERY_RANK
    from moviessl.utils.progress import bar

    def command(args):
        for _ in bar(range(3), desc="counting"):
            pass
        log = logging.getLogger("moviessl")
        log.info("24 train segments")
        log.info("rank 1/2: 3 ok", extra=EVERY_RANK)
        log.warning("rank 1's own warning")
        print('{"top1": 50.0}')
        return 0

    # the logger's own level too: an earlier test in this process (the demo, the selftest) may have set it
    caplog.set_level(logging.INFO, logger="moviessl")

    for k in ("RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK", "NODE_RANK", "GROUP_RANK"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert run_as_command(monkeypatch, command) == 0
    out, err = capsys.readouterr()
    assert out == "" and "counting" not in err
    assert [r.getMessage() for r in caplog.records] == ["rank 1/2: 3 ok", "rank 1's own warning"]
    caplog.clear()
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert run_as_command(monkeypatch, command) == 0
    out, err = capsys.readouterr()
    assert out == '{"top1": 50.0}\n' and "counting" in err and "24 train segments" in caplog.text


def test_a_process_alone_with_an_inherited_rank_runs_as_the_single_process_it_is(tmp_path):
    """``RANK=1`` left in a shell by another job, no launcher (``WORLD_SIZE`` unset): the command
    printed nothing, and Lightning (which reads the variable as the rank) made it no job leader, so a
    run wrote no config.yaml. It says so once and runs as rank 0."""
    import os

    code = (
        "import sys, moviessl.cli as c\n"
        "def cmd(args):\n"
        "    from moviessl.dist import job_leader\n"
        "    print('leader', job_leader())\n"
        "    return 0\n"
        "build = c.build_parser\n"
        "def b():\n"
        "    p = build(); p.set_defaults(func=cmd); return p\n"
        "c.build_parser = b\n"
        "sys.exit(c.main([]))\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK")}
    env.update(RANK="1", PYTHONPATH=os.pathsep.join(sys.path))
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout == "leader True\n"
    assert p.stderr.count("RANK=1 with WORLD_SIZE unset or 1") == 1


def test_a_stray_argument_shows_the_commands_usage_and_an_unquoted_path(tmp_path, monkeypatch, capsys):
    """`moviessl extract ... --videos my movies/film.mp4` (a path with spaces, unquoted) printed
    moviessl's own usage line ("moviessl [-h] [--version] [-v] COMMAND ...") and only the stray half
    of the path. The command's usage is shown, and the path the shell split."""
    import pytest

    (tmp_path / "my movies").mkdir()
    (tmp_path / "my movies" / "big buck bunny.mp4").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    argv = ["extract", "--backbone", "b.pt", "--videos", "my", "movies/big", "buck", "bunny.mp4", "--out", "o"]
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and "usage: moviessl extract " in err
    assert "moviessl extract: error: unrecognized arguments: movies/big buck bunny.mp4" in err
    assert "quoted: 'my movies/big buck bunny.mp4'" in err
    with pytest.raises(SystemExit):
        cli.main(["finetune", "vidsitu", "--task", "srl", "--out", "o", "--data-root", "d", "--bogus"])
    err = capsys.readouterr().err
    assert "usage: moviessl finetune vidsitu " in err and "quoted" not in err


def test_a_failed_command_removes_the_empty_out_folder_it_made_and_no_other(tmp_path, capsys, monkeypatch):
    # every command makes its --out first (for its lock): one refused on bad input left the empty
    # folder (and its new parents) behind, one per mistyped run
    missing = str(tmp_path / "no_features")
    assert cli.main(["pretrain-context", "--features", missing, "--out", str(tmp_path / "new" / "ctx")]) == 2
    assert "feature folder not found" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
    (tmp_path / "there").mkdir()  # a folder that existed before stays, empty or not
    assert cli.main(["pretrain-context", "--features", missing, "--out", str(tmp_path / "there")]) == 2
    assert (tmp_path / "there").is_dir()

    def fail_after_writing(args):  # a failed command that wrote something keeps it
        from moviessl.utils.io import ensure_out_dir

        (ensure_out_dir(tmp_path / "made" / "out") / "config.yaml").write_text("x")
        raise BadInputError("x", "bad")

    assert run_as_command(monkeypatch, fail_after_writing) == 2
    assert (tmp_path / "made" / "out" / "config.yaml").is_file()


def test_a_nested_command_leaves_the_outer_ones_record_of_the_folders_it_made(tmp_path):
    # the record of a finished inner block was taken off the stack by equality, not identity: with
    # both records empty it took the outer one's, whose later folders then went into the inner's
    # record and a failed outer command left them behind
    from moviessl.utils.io import ensure_out_dir, removing_empty_out_dirs

    with removing_empty_out_dirs() as drop_outer:
        with removing_empty_out_dirs():
            pass
        ensure_out_dir(tmp_path / "outer" / "out")
        drop_outer()
    assert not (tmp_path / "outer").exists()


def test_stdout_of_a_locale_without_utf8_takes_any_text(tmp_path, monkeypatch):
    """Under LC_ALL=C with PYTHONUTF8=0 stdout is ASCII (errors surrogateescape): ``moviessl --help``
    (its ``±`` and ``§``), and the summary table that ``finetune --seeds 2`` prints after every seed had
    trained, ended in a UnicodeEncodeError traceback. Characters the locale cannot write are escaped
    as on stderr; a non-ASCII folder name (held as surrogate escapes there) keeps its own bytes."""
    import io

    from moviessl.tasks.base import write_summary
    from moviessl.tasks.vidsitu import TASKS

    name = "Amélie".encode().decode("ascii", "surrogateescape")  # the ASCII locale's name for it
    folder = tmp_path / name
    folder.mkdir()
    row = {"cider": 40.0, "cider_verb": 30.0, "cider_arg": 20.0, "rouge_l": 35.0, "lea": 45.0}
    runs = [{"seed": k, "metrics": row} for k in range(2)]
    write_summary(folder, runs, TASKS["srl"].metric_keys, "srl", "VidSitu srl", task="srl")
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="ascii", errors="surrogateescape", write_through=True)
    monkeypatch.setattr(sys, "stdout", out)
    assert cli.main(["table", "vidsitu", str(folder)]) == 0
    assert b"| Am\xc3\xa9lie | 40.00 \\xb1 0.00 |" in raw.getvalue()
    done = subprocess.run(
        [sys.executable, "-m", "moviessl", "--help"],
        env={**os.environ, "LC_ALL": "C", "PYTHONUTF8": "0"},
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0 and b"mean \\xb1" in done.stdout and not done.stderr


def test_a_rank_that_does_not_speak_takes_any_text_under_an_ascii_locale(tmp_path):
    """A process of a multi-process job other than rank 0 writes its stdout to os.devnull, which was
    opened in the locale's encoding: under LC_ALL=C with PYTHONUTF8=0 (ASCII) the summary table's ``±``
    that every rank prints after training ended that rank in a UnicodeEncodeError traceback, though
    rank 0's own stdout escapes it. What goes nowhere is written in any encoding."""
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from moviessl import cli\n"
        "from moviessl.tasks.base import write_summary\n"
        "from moviessl.tasks.vidsitu import TASKS\n"
        "folder = Path(sys.argv[1])\n"
        "row = {'cider': 40.0, 'cider_verb': 30.0, 'cider_arg': 20.0, 'rouge_l': 35.0, 'lea': 45.0}\n"
        "runs = [{'seed': k, 'metrics': row} for k in range(2)]\n"
        "write_summary(folder, runs, TASKS['srl'].metric_keys, 'srl', 'VidSitu srl', task='srl')\n"
        "cli.speaks_for_job = lambda: False  # a rank other than 0\n"
        "sys.exit(cli.main(['table', 'vidsitu', str(folder)]))\n"
    )
    (tmp_path / "runs").mkdir()
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "runs")],
        env={**os.environ, "LC_ALL": "C", "PYTHONUTF8": "0"},
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0 and not done.stdout, done.stderr.decode(errors="replace")[-2000:]


def test_main_gives_the_callers_stdout_back_as_it_was(tmp_path, monkeypatch):
    """``cli.main`` gives an ASCII stdout an error handler that escapes what it cannot write; called
    from Python (a notebook, a script under LC_ALL=C) it left the caller's stdout so for good, every
    later print of the caller's escaped where it raised. The handler is the command's only: the
    caller's own is put back when the command returns."""
    import io

    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="ascii", errors="strict", write_through=True)
    monkeypatch.setattr(sys, "stdout", out)
    assert cli.main(["table", "vidsitu", str(tmp_path / "none")]) == 2  # (no runs there)
    assert out.errors == "strict"
    try:
        cli.main(["--help"])
    except SystemExit:
        pass
    assert out.errors == "strict" and b"\\xb1" in raw.getvalue()  # --help's ± escaped meanwhile


def test_a_command_gives_the_root_logger_back_as_it_was(monkeypatch, capsys):
    """``main`` set up the root logger with ``basicConfig`` and left it: a script that runs two commands
    kept the first one's handler, and ``basicConfig`` does nothing once the root has one, so the second
    command's ``-v`` was ignored (INFO, not DEBUG)."""
    import logging

    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])  # as in a fresh script (pytest's capture handlers aside)
    monkeypatch.setattr(root, "level", logging.WARNING)
    levels = []
    monkeypatch.setattr(cli, "build_parser", _parser_noting_level(cli.build_parser, levels))
    assert cli.main(["model-info", "slowd_cpu"]) == 0
    assert root.handlers == [] and root.level == logging.WARNING
    assert cli.main(["-v", "model-info", "slowd_cpu"]) == 0
    assert levels == [logging.INFO, logging.DEBUG]
    assert root.handlers == [] and root.level == logging.WARNING


def _parser_noting_level(build, levels):
    """``build_parser`` whose commands note the root logger's level when they run."""

    def wrapped():
        import logging

        parser = build()
        for action in parser._subparsers._group_actions:
            for sub in action.choices.values():
                func = sub.get_default("func")
                if func is not None:
                    sub.set_defaults(func=lambda a, f=func: (levels.append(logging.getLogger().level), f(a))[1])
        return parser

    return wrapped
