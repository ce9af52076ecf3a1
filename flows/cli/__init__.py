"""The ``transferrec`` command line: fetch, validate, synthetic, domains, pretrain, onboard, demo, curve, serve,
trigger, deployments, notify, compare, recommend, sources, tracking-server, ui, daemon.

* :mod:`flows.cli.options`: the run commands' options, bound to config fields (defaults and choices come from
  the config models); ``--config``, ``--set`` and ``--print-config``.
* :mod:`flows.cli.parser`: the commands and their arguments.
* :mod:`flows.cli.commands`: what each command does.
* :mod:`flows.cli.output`: what they print.

Exit codes: 0 success; 1 the data broke its contract or the pipeline failed; 2 bad usage or unreadable input;
130 / 143 stopped by SIGINT / SIGTERM (the run is marked KILLED, nothing registered). Every error is one line on
stderr (``--debug`` adds the traceback). With ``--json`` the last line on stdout is one JSON object; logs go
to stderr.
"""

from __future__ import annotations

import atexit
import sys
from typing import TYPE_CHECKING

#: The exit code of a finished command when it runs as the process (:func:`run`), for :func:`_exit_now`.
_FINISHED: list[int] = []


def _exit_now() -> None:
    """The last exit handler of a ``transferrec`` process whose command finished (:func:`run`): end the process
    now. By then the command's work is done, every thread has been joined and every other exit handler has run
    (this one is registered first, when the CLI is imported, so it runs last), and the logs are flushed here;
    what remains is the interpreter tearing down torch, Lightning, Prefect and MLflow module by module, about
    2 s of a fresh onboarding on 2 cores. A command called in-process (``main``, as the tests call it) never
    sets the code, so this does nothing there."""
    if _FINISHED:
        import logging
        import os

        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_FINISHED[-1])


# first, before the imports below register theirs: it runs last
atexit.register(_exit_now)

from flows.cli.output import compare_markdown, print_summary  # noqa: E402
from flows.cli.parser import FLOW_COMMANDS, build_parser, resolve_config  # noqa: E402

if TYPE_CHECKING:
    import argparse

    from tasks.runtime import Interrupted

__all__ = ["build_parser", "compare_markdown", "main", "print_summary", "resolve_config", "run", "run_here"]


def run() -> None:
    """The command as this process (the console script, :mod:`flows.console`, when no daemon runs it):
    :func:`main`, then the process ends without the interpreter's teardown (:func:`_exit_now`)."""
    code = main()
    _FINISHED.append(code)
    sys.exit(code)


def run_here(argv: list[str]) -> int:
    """The command ``argv`` as the console script runs it, in a process the daemon forked for it: :func:`main`,
    then the exit handlers, the last of which (:func:`_exit_now`) ends the process."""
    import atexit

    code = main(argv)
    _FINISHED.append(code)
    atexit._run_exitfuncs()
    return code


def main(argv: list[str] | None = None) -> int:
    """The ``transferrec`` command line on ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    args = build_parser().parse_args(argv)
    from tasks.runtime import Interrupted, command_environment, configure_environment, handle_signals, interruption

    configure_environment(command_environment(verbose=args.verbose))
    restore = None
    try:
        restore = handle_signals()
        if getattr(args, "print_config", False):
            sys.stdout.write(resolve_config(args).model_dump_json(indent=2) + "\n")
            return 0
        if args.command in FLOW_COMMANDS:
            from tasks.runtime import prestart_prefect_api, quiet_libraries, show_progress

            prestart_prefect_api()  # overlaps Prefect's temporary API start-up with the imports below
            quiet_libraries()
            if not args.quiet:
                show_progress()
        if args.command == "daemon":
            return daemon(args)
        from flows.cli.commands import COMMANDS

        if args.command not in FLOW_COMMANDS:
            return COMMANDS[args.command](args)
        from tasks.runtime import flow_settings

        with flow_settings():
            return COMMANDS[args.command](args)
    except Interrupted as stop:
        return _stopped(stop)
    except Exception as exc:  # noqa: BLE001 - every failure becomes one message and an exit code
        stop = interruption()  # a stop whose Interrupted was dropped on the way (see tasks.runtime.interruption)
        if stop is not None:
            return _stopped(stop)
        if args.debug:
            import traceback

            traceback.print_exc()
        code = _expected(exc)
        if code is None:
            sys.stderr.write(f"error: {type(exc).__name__}: {_one_line(exc)} (--debug shows the traceback)\n")
            return 1
        return code
    finally:
        if restore is not None:
            restore()


def daemon(args: argparse.Namespace) -> int:
    """``daemon start|stop|status`` (:mod:`flows.daemon`): the daemon runs each command it is handed as
    :func:`run_here` does."""
    from flows import daemon as warm
    from flows.cli.output import print_json

    if args.action == "start":
        return warm.start(run_here, foreground=args.foreground, idle_timeout=args.idle_timeout)
    if args.action == "stop":
        stopped = warm.stop()
        sys.stdout.write("transferrec daemon: stopped\n" if stopped else "transferrec daemon: none running\n")
        return 0
    state = warm.status()
    if args.json:
        print_json({"up": state is not None, **(state or {})})
    elif state is None:
        sys.stdout.write(f"transferrec daemon: none running ({warm.socket_path()})\n")
    else:
        sys.stdout.write(f"transferrec daemon: pid {state['pid']}, {state['socket']}, {state['served']} commands "
                         f"served, {state['running']} running\n")
    return 0


def _stopped(stop: Interrupted) -> int:
    """Report a SIGINT or SIGTERM and return its exit code (130, 143)."""
    sys.stderr.write(f"{stop}: stopped (a run in progress is marked KILLED in MLflow; nothing was registered)\n")
    return stop.exit_code


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or repr(exc)


def _expected(exc: Exception) -> int | None:
    """Report an expected failure on stderr and return its exit code (None: not an expected one)."""
    from data_contracts.report import ContractViolation
    from models.data.datasets import DatasetFormatError
    from models.data.fetch import FetchError
    from models.split import InsufficientDataError

    if isinstance(exc, ContractViolation):
        sys.stderr.write(f"{exc}\n\n{exc.to_markdown()}\n")
        return 1
    if isinstance(exc, PermissionError):
        sys.stderr.write(f"error: cannot read {exc.filename or 'a file'}: permission denied\n")
        return 2
    if isinstance(exc, FetchError | DatasetFormatError | FileNotFoundError | InsufficientDataError | ValueError):
        sys.stderr.write(f"error: {_one_line(exc)}\n")
        return 2
    return None
