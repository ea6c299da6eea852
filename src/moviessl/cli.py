"""The ``moviessl`` command: a thin dispatcher over the stages.

Each stage module exposes ``add_parser(subparsers)``, which registers its subcommand(s) and sets
``func`` (``func(args) -> int | None``). Bad input anywhere raises
:class:`moviessl.errors.BadInputError`; here it becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import signal
import sys
import threading

from . import __version__
from .dist import EVERY_RANK_KEY, end_process_group, speaks_for_job, stray_rank_vars
from .errors import BadInputError, Terminated, os_error_line
from .utils.io import removing_empty_out_dirs, stdout_taking_any_text
from .utils.progress import BarAwareHandler

# (module providing add_parser) in the order shown by --help; each module is one stage.
STAGE_MODULES = (
    "moviessl.video.cli",  # probe
    "moviessl.models.cli",  # model-info
    "moviessl.synth.cli",  # synth
    "moviessl.ssl.cli",  # pretrain-backbone, probe-backbone
    "moviessl.features.cli",  # extract
    "moviessl.context.cli",  # pretrain-context
    "moviessl.tasks.cli",  # finetune
    "moviessl.tasks.tables",  # table
    "moviessl.eval.cli",  # evaluate
    "moviessl.demo",  # demo
    "moviessl.selftest",  # selftest
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="moviessl", description="Hierarchical self-supervised learning for movies.")
    parser.add_argument("--version", action="version", version=f"moviessl {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in STAGE_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:  # a stage not installed in this build
            if e.name != name:
                raise
            continue
        mod.add_parser(sub)
    return parser


def add_overrides_arg(p: argparse.ArgumentParser) -> None:
    """Shared: ``--preset`` and trailing ``key.sub=value`` overrides."""
    p.add_argument("--preset", default="cpu", help="config preset (cpu, paper, ...) or a .yaml file (default: cpu)")
    p.add_argument(
        "overrides", nargs="*", default=[], metavar="KEY=VALUE", help="dotted config overrides, e.g. trainer.devices=2"
    )


def is_override(token: str) -> bool:
    """``key.sub=value``: a dotted config override, as opposed to an option or a stray word."""
    return not token.startswith("-") and "=" in token


_SIGTERM_OWNER: list[int] = []  # the pid whose SIGTERM is raised as Terminated, while a command runs


def _default_sigterm_in_child() -> None:
    """A process forked while a command runs dies of SIGTERM at once, as a new process does: with the
    handler inherited it would run it only when its native code returns to Python (seconds into a
    matmul), and under Lightning's fit it inherited Lightning's, which only notes the signal."""
    if _SIGTERM_OWNER and os.getpid() != _SIGTERM_OWNER[-1]:
        try:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        except (ValueError, OSError):  # not the main thread of the main interpreter
            pass


os.register_at_fork(after_in_child=_default_sigterm_in_child)


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM raises :class:`Terminated` in this process while the command runs. Lightning's own
    handler only notes it: a training run then ended as ``SystemExit`` with no code (exit 0, as if it
    had finished) and a prediction loop, which never looks, ran on to its end. Lightning calls a
    handler it finds here after its own. Processes forked from this one (loader, render and decoding
    workers) get the default disposition back (:func:`_default_sigterm_in_child`) and die of it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pid = os.getpid()
    _SIGTERM_OWNER.append(pid)

    def handler(signum, frame):
        if os.getpid() != pid:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        _ignore_dead_workers()  # before the first bytecode of the unwinding, where torch's would run
        raise Terminated

    try:
        before = signal.signal(signal.SIGTERM, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, before)
    finally:
        _SIGTERM_OWNER.pop()


class _WarningsOnly(logging.Filter):
    """Warnings and errors, and the lines a process says of its own share (``extra=dist.EVERY_RANK``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or bool(getattr(record, EVERY_RANK_KEY, False))


@contextlib.contextmanager
def _warnings_only():
    """While the command runs, the console's handlers pass :class:`_WarningsOnly`'s lines alone."""
    handlers, f = list(logging.getLogger().handlers), _WarningsOnly()
    for h in handlers:
        h.addFilter(f)
    try:
        yield
    finally:
        for h in handlers:
            h.removeFilter(f)


def _interruption(e: BaseException) -> KeyboardInterrupt | None:
    """The Ctrl-C or SIGTERM (:class:`Terminated`) that ``e`` was raised while handling, if any: the
    loader workers die of the same signal, and PyTorch's SIGCHLD handler then raised 'DataLoader
    worker ... is killed by signal' over the interrupt, a traceback instead of the command's line."""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, KeyboardInterrupt):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def _ignore_dead_workers() -> None:
    """After a Ctrl-C or SIGTERM: the loader workers die of the same signal, and PyTorch's SIGCHLD
    handler raised their deaths at the interpreter's exit, a traceback after the command's line.
    SIGCHLD gets its default again, and torch is told to install its handler with the next loader
    (a caller that goes on in this process)."""
    import signal

    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    handling = sys.modules.get("torch.utils.data._utils.signal_handling")
    if handling is not None:
        handling._SIGCHLD_handler_set = False


def main(argv: list[str] | None = None) -> int:
    # what stdout cannot write is escaped while the command runs; a caller's own stdout (a command
    # called from Python) is given back as it was
    with stdout_taking_any_text(), _root_logging_restored():
        return _main(argv)


@contextlib.contextmanager
def _root_logging_restored():
    """The command sets up the root logger where the caller has not (``basicConfig``); a caller that
    goes on in this process gets it back as it was. The handler stayed before, and since
    ``basicConfig`` does nothing once the root has one, a second ``main(["-v", ...])`` in one process
    logged at the first command's level."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for h in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(h)
        root.setLevel(level)


def _main(argv: list[str] | None) -> int:
    # A rank variable inherited from a parent shell or job, not set by a launcher: Lightning reads it
    # as this process's rank when it is imported (building the parser may import it), so the process
    # took itself for rank 1, printed nothing, wrote no config.yaml, took no folder lock and logged
    # nothing. Without the variables it runs as the single process it is.
    stray = "; ".join(
        f"{key}={os.environ.pop(key).strip()} with {world} unset or 1" for key, world in stray_rank_vars()
    )
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    extra = [t for t in extra if t != "--"]  # "--" ends the options; argparse leaves it among the leftovers
    if extra:
        # argparse takes one block of positionals; ``KEY=VALUE`` tokens after a later option
        # (``--task srl a=1 --seeds 2 b=2``) come back here and join the overrides, in order.
        if hasattr(args, "overrides") and all(is_override(t) for t in extra):
            args.overrides = [*args.overrides, *extra]
        else:
            # the command's own usage, not moviessl's "COMMAND ...", and a hint for an unquoted path with spaces
            used = _used_parser(parser, sys.argv[1:] if argv is None else argv)
            used.error(f"unrecognized arguments: {' '.join(extra)}{_unquoted_path_hint(args, extra)}")
    # Every process of a multi-process job runs the command (Lightning's launcher starts ranks > 0 by
    # running it again): the job's result and INFO lines came once per process, the result JSON read
    # twice by a script. Rank 0 reports; the others keep their warnings and errors, which may be their
    # own, and the INFO lines that say what each did of its share (-v: everything).
    speaks = speaks_for_job()
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        handlers=[BarAwareHandler()],
    )
    if stray:
        logging.getLogger("moviessl").warning(
            "%s: no launcher started this process as one of several; it runs as the single process it is", stray
        )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    finished, callers_group = False, _process_group(1) is not None
    rc, made = None, contextlib.ExitStack()
    drop_empty_out = made.enter_context(removing_empty_out_dirs())
    try:
        try:
            with _sigterm_as_interrupt(), contextlib.ExitStack() as quiet:
                if not speaks:
                    # any text: opened in the locale's encoding, under an ASCII one (LC_ALL=C) the
                    # summary table's ``±`` that every rank prints ended this rank in a traceback
                    nowhere = open(os.devnull, "w", encoding="utf-8", errors="ignore")
                    quiet.enter_context(contextlib.redirect_stdout(quiet.enter_context(nowhere)))
                    if not args.verbose:
                        quiet.enter_context(_warnings_only())
                rc = args.func(args)
            finished = True
        except BaseException as e:
            stop = _interruption(e)
            if stop is not None:
                _ignore_dead_workers()
            if stop is None or stop is e:
                raise
            raise stop from None
    except BadInputError as e:
        print(f"moviessl: error: {e}", file=sys.stderr)
        return _tell_peers(2, str(e))
    except OSError as e:  # the machine, not the code: a full disk, a folder we may not write, a vanished file
        logging.getLogger("moviessl").debug("OSError", exc_info=True)
        print(f"moviessl: error: {os_error_line(e)}", file=sys.stderr)
        return _tell_peers(2, os_error_line(e))
    except Terminated:
        print("moviessl: terminated (finished work is kept; rerun with --resume where offered)", file=sys.stderr)
        return _tell_peers(143, "terminated")
    except KeyboardInterrupt:
        print("moviessl: interrupted (finished work is kept; rerun with --resume where offered)", file=sys.stderr)
        return _tell_peers(130, "interrupted")
    except Exception as e:
        peer = _peer_failure(e)
        if peer is None:
            raise
        logging.getLogger("moviessl").debug("a collective without its peer", exc_info=True)
        print(f"moviessl: error: {peer[1]}", file=sys.stderr)
        return peer[0]
    finally:
        if not finished:
            _stop_launched_processes()
        if not finished or rc:  # a failed command leaves no empty --out it made behind
            drop_empty_out()
        made.close()
    if not callers_group:  # a script that started its group goes on using it after the command
        end_process_group()  # after a finished command only: see its docstring
    return int(rc or 0)


def _used_parser(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.ArgumentParser:
    """The (sub)command parser ``argv`` reached, e.g. ``finetune vidsitu``'s."""
    tokens = list(argv)
    while True:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        name = next((t for t in tokens if subs and t in subs[0].choices), None)
        if name is None:
            return parser
        tokens = tokens[tokens.index(name) + 1 :]
        parser = subs[0].choices[name]


def _unquoted_path_hint(args: argparse.Namespace, extra: list[str]) -> str:
    """`` (quote it: 'my movies/film.mp4')`` where a value and the leftovers after it name a path that
    exists: the shell split an unquoted path with spaces (``--videos my movies/film.mp4``)."""
    for value in vars(args).values():
        if not isinstance(value, str) or not value:
            continue
        for k in range(len(extra), 0, -1):
            joined = " ".join([value, *extra[:k]])
            if os.path.exists(joined):
                return f" (a path with spaces must be quoted: '{joined}')"
    return ""


def _stop_launched_processes() -> None:
    """After a failed command: the job's processes Lightning's launcher started from this one go too
    (:func:`moviessl.training.stop_launched_processes`)."""
    training = sys.modules.get("moviessl.training")  # a command that built no trainer started none
    if training is not None:
        training.stop_launched_processes()


_FAILED_KEY = "moviessl/failed"  # in the process group's store: "<rank> <exit code> <line>" of a failed process


def _process_group(min_size: int = 2):
    """``torch.distributed`` where this process is one of at least ``min_size`` of an initialised
    process group."""
    dist = sys.modules.get("torch.distributed")  # a command that never imported torch has no group
    if dist is not None and dist.is_available() and dist.is_initialized() and dist.get_world_size() >= min_size:
        return dist
    return None


def _tell_peers(rc: int, line: str) -> int:
    """``rc``; a failed process of a multi-process job first leaves its exit code and line in the
    job's store, where the processes it leaves inside a collective find them (:func:`_peer_failure`)."""
    dist = _process_group()
    if dist is not None:
        try:
            dist.distributed_c10d._get_default_store().set(_FAILED_KEY, f"{dist.get_rank()} {rc} {line}")
        except Exception:  # the store's host (rank 0) gone too: the peers say what they can
            pass
    return rc


_PEER_GONE = (  # gloo's words, and NCCL's (ncclRemoteError)
    "Connection closed by peer",
    "Connection reset by peer",
    "remote process exited",
)


def _peer_failure(e: BaseException) -> tuple[int, str] | None:
    """``(exit code, line)`` where ``e`` is a collective that failed because another process of the
    job has gone: gloo raised 'Connection closed by peer' in a traceback under that process's own
    line, and the job (Lightning's launcher: its rank 0) ended with exit 1 whatever the reason. The
    failed process's code and line where it left them (:func:`_tell_peers`), else exit 1. A
    ``DistError`` that names no gone peer, with no peer's line in a store that answers, is this
    process's own failure (NCCL out of memory, say): None, its traceback says it."""
    dist = _process_group()
    if dist is None:
        return None
    chain = _chain(e)
    said_gone = any(g in str(x) for x in chain for g in _PEER_GONE)
    if not said_gone and not any(isinstance(x, dist.DistError) for x in chain):
        return None
    try:
        store = dist.distributed_c10d._get_default_store()
        if store.check([_FAILED_KEY]):
            rank, rc, line = store.get(_FAILED_KEY).decode("utf-8", "replace").split(" ", 2)
            return int(rc), f"{line} (rank {rank} of this job; this process stopped with it)"
    except Exception:  # the store's host (rank 0) is the one gone
        said_gone = True
    if not said_gone:
        return None
    return 1, "another process of this job has gone (its own output says why); this process stopped with it"


def _chain(e: BaseException | None) -> list[BaseException]:
    """``e`` and the errors it was raised from or while handling."""
    seen: list[BaseException] = []
    while e is not None and all(e is not x for x in seen):
        seen.append(e)
        e = e.__cause__ or e.__context__
    return seen


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
