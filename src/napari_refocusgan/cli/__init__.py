"""The ``refocusgan`` command line. Each group of commands lives in its own module with a
``register(subparsers)`` function; every command is a thin layer over the core."""

from __future__ import annotations

import argparse
import os
import re
import sys

from ..core.allocator import retain_freed_memory
from ..core.errors import RefocusError, is_out_of_memory


# argparse (before Python 3.14) reads "-1e-3" as an unknown option, so "--delta -1e-3" failed with "expected one
# argument"; its own pattern knows only "-1" and "-.5". Subparsers take the class of their parent.
NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = NEGATIVE_NUMBER


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="refocusgan",
        description="Single-image refocusing (RefocusGAN): focal stacks, focus measures, deblur, refocus.",
    )
    # imported here, inside main's handlers: they import torch, which takes a second or two to load, and a
    # Ctrl-C meanwhile is an interruption like any other, not a traceback
    from . import classical_cmds, network_cmds, stack_cmds

    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (stack_cmds, classical_cmds, network_cmds):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    prog = "refocusgan"
    try:
        retain_freed_memory()  # this process is ours: layers reuse freed memory instead of faulting in new pages
        args = build_parser().parse_args(argv)
        prog = f"refocusgan {args.command}"
        return int(args.func(args) or 0)
    except RefocusError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader of our standard output left (| head): nothing to report, but the rest of the output is lost,
        # as for a shell tool ended by SIGPIPE; the interpreter must not fail flushing it again at exit
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):  # a stdout without a file descriptor (called in-process)
            pass
        return 128 + 13
    except OSError as exc:  # unwritable output, a file where a folder should be, a full disk
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as exc:
        if not is_out_of_memory(exc):
            raise
        print(f"{prog}: error: out of memory; try a smaller image (or --tile)", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
