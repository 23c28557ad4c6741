"""The `nano` command line.

Each subcommand is a module in nano_runtime/commands/ defining NAME, HELP,
add_arguments(parser) and run(args) -> exit code; this file only wires them.
Errors: one line on stderr beginning ``error: ``; exit 2 for bad input or
usage, 1 for anything else; a traceback only with --debug.
"""
from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

from .errors import NanoError


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        sys.stderr.write(f"error: {message} (see `{self.prog} --help`)\n")
        raise SystemExit(2)


def _command_modules():
    from . import commands
    mods = []
    for info in pkgutil.iter_modules(commands.__path__):
        if not info.name.startswith("_"):
            mods.append(importlib.import_module(f"{commands.__name__}.{info.name}"))
    return sorted(mods, key=lambda m: getattr(m, "ORDER", 50))


def build_parser():
    p = _Parser(prog="nano", description="Distill, quantize and run small language models on-device.")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    p.add_argument("--version", action="store_true", help="print versions and exit")
    sub = p.add_subparsers(dest="command", parser_class=_Parser, metavar="COMMAND")
    for mod in _command_modules():
        sp = sub.add_parser(mod.NAME, help=mod.HELP, description=mod.HELP)
        sp.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks on errors")
        mod.add_arguments(sp)
        sp.set_defaults(_run=mod.run)
    return p


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    try:
        args = build_parser().parse_args(argv)
        if args.version:
            from . import __version__
            print(f"nano_runtime {__version__}")
            return 0
        if not getattr(args, "_run", None):
            build_parser().print_help()
            return 2
        return int(args._run(args) or 0)
    except NanoError as e:
        if debug:
            raise
        sys.stderr.write(f"error: {e}\n")
        return e.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        return 130
    except BrokenPipeError:
        return 1
    except OSError as e:
        if debug:
            raise
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        sys.stderr.write(f"error: {where}{e.strerror or e}\n")
        return 2
    except MemoryError:
        sys.stderr.write("error: out of memory\n")
        return 1
    except Exception as e:  # a bug: say so in one line
        if debug:
            raise
        sys.stderr.write(f"error: internal error: {type(e).__name__}: {e} (rerun with --debug)\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
