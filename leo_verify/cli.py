"""The ``leo-verify`` command line.

Each subcommand is a :class:`Command`: a name, a one-line help, a function
that adds its arguments to an :class:`argparse.ArgumentParser`, and a function
``run(args) -> exit code``.  :data:`COMMANDS` maps names to commands; to add
one (``analyze``, ``compress``, ``check``, ``recheck``), write the two
functions -- in another module if they are long -- and :func:`register` it.
The shared chores (loading a model, reading points, writing JSON/NPY outputs)
are the helpers below.

Errors: every :class:`~leo_verify.errors.LeoError` becomes one line
``leo-verify: error: <message>`` on stderr and the process exits with the
error's ``exit_code`` (see :data:`leo_verify.errors.EXIT_CODES`).  Usage
errors exit 3 (argparse's default 2 is reserved for ``check`` = unknown).
Ctrl-C exits 130.  Anything else is a bug: the traceback is printed and the
exit code is 70.  Set ``LEO_VERIFY_DEBUG=1`` to get tracebacks for
``LeoError`` too.
"""
from __future__ import annotations

import os
import sys
import traceback

from . import __version__
from .cli_common import (COMMANDS, EXIT_BROKEN_PIPE, EXIT_BUG, EXIT_INTERRUPTED, PROG, ArgumentParser,  # noqa: F401
                         Command, HelpFormatter, register)
from .errors import LeoError

__all__ = ["main", "Command", "COMMANDS", "register", "build_parser"]

# --------------------------------------------------------------------------
# entry point

def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog=PROG,
        description="Lossless, certified compression of ReLU networks.",
        epilog="Exit codes: 0 ok, 3 usage, 4 missing file, 5 malformed model, 6 unsupported op, "
               "7 invalid network, 8 bad domain, 9 bad input data, 10 output refused, "
               "70 internal error, 130 interrupted.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                parser_class=ArgumentParser)
    for cmd in COMMANDS.values():
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help, formatter_class=HelpFormatter,
                           epilog=f"example:\n  {cmd.example}" if cmd.example else None)
        cmd.add_arguments(p)
        p.set_defaults(_run=cmd.run)
    return parser


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    parts = [part.strip() for part in text.splitlines() if part.strip()]
    return " ".join(parts) or type(exc).__name__


def main(argv=None) -> int:
    """Run the CLI; returns the exit code (see :data:`leo_verify.errors.EXIT_CODES`)."""
    try:
        parser = build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help and --version exit 0 through argparse
            return exc.code if isinstance(exc.code, int) else 0
        return int(args._run(args) or 0)
    except LeoError as exc:
        if os.environ.get("LEO_VERIFY_DEBUG"):
            traceback.print_exc()
        print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # stdout went away (e.g. piped into `head`): stop quietly
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return EXIT_BROKEN_PIPE
    except Exception:
        traceback.print_exc()
        print(f"{PROG}: internal error (a bug): please report it with the traceback above",
              file=sys.stderr)
        return EXIT_BUG


# commands defined in their own modules register themselves on import (in --help order);
# they import cli_common, never this module
from . import cli_info  # noqa: E402,F401
from . import cli_analyze, cli_compress  # noqa: E402,F401
from . import cli_check  # noqa: E402,F401
from . import cli_report  # noqa: E402,F401
from . import cli_train  # noqa: E402,F401

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
