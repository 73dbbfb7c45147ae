"""The ``refocusgan`` command line. Each group of commands lives in its own module with a
``register(subparsers)`` function; every command is a thin layer over the core."""

from __future__ import annotations

import argparse
import re
import sys

from ..core.allocator import retain_freed_memory
from ..core.errors import RefocusError, is_out_of_memory
from . import classical_cmds, network_cmds, stack_cmds

COMMAND_MODULES = [stack_cmds, classical_cmds, network_cmds]


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
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    retain_freed_memory()  # this process is ours: layers reuse freed memory instead of faulting in new pages
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except RefocusError as exc:
        print(f"refocusgan {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"refocusgan {args.command}: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # unwritable output, a file where a folder should be, a full disk
        print(f"refocusgan {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as exc:
        if not is_out_of_memory(exc):
            raise
        print(f"refocusgan {args.command}: error: out of memory; try a smaller image (or --tile)", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
