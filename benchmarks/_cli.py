"""What the benchmark scripts share on their command line: count arguments that must be positive, and bad
input (a weights file that is not one, a wrong-role model, an unwritable folder) reported in one line with
exit status 2, as the refocusgan command does, instead of a traceback."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `training`, for the scripts that use it

from napari_refocusgan.core.errors import RefocusError  # noqa: E402


def _at_least(minimum: int, what: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    parse.__name__ = what  # argparse names it in "invalid … value"
    return parse


positive_int = _at_least(1, "positive_int")
count = _at_least(0, "count")  # a number of scenes: 0 (none) or more


def size(text: str) -> tuple[int, int]:
    """Two positive whole numbers joined by x: HxW (4000x6000), or a generator's NGFxBLOCKS (32x6)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two numbers joined by x (e.g. 4000x6000), got {text!r}") from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"sizes must be positive, got {text!r}")
    return h, w


def run_script(main: Callable[[], int | None]) -> None:
    """Run a script's ``main`` and exit with its status; bad input ends in one line on stderr."""
    try:
        status = main()
    except (RefocusError, OSError) as exc:
        print(f"{Path(sys.argv[0]).name}: error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    raise SystemExit(status or 0)
