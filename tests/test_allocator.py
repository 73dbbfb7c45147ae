"""The malloc setting of the command-line entry points (process-wide, so each case runs in a subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from napari_refocusgan.core.allocator import is_glibc

REPO = Path(__file__).resolve().parents[1]

# 100 × 1 MiB arrays, written and freed, four times: the page faults of each round
ROUNDS = textwrap.dedent("""
    import resource
    import numpy as np
    from napari_refocusgan.core import allocator
    allocator.retain_freed_memory()

    def faults_of_one_round():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        chunks = [np.ones(1 << 17) for _ in range(100)]
        del chunks
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    print(allocator._applied, *[faults_of_one_round() for _ in range(4)])
""")

# an entry point's main, then whether the setting is in effect
ENTRY = textwrap.dedent("""
    import sys
    from napari_refocusgan.core import allocator
    if sys.argv[1] == "refocusgan":
        from napari_refocusgan.cli import main
    elif sys.argv[1] == "training":
        from training.__main__ import main
    else:  # the core's inference, as the napari plugin runs it
        import numpy as np
        from napari_refocusgan.core.inference import deblur
        from napari_refocusgan.core.networks import Generator, deblur_config
        main = lambda argv: deblur(np.zeros((8, 8, 3), np.uint8), Generator(deblur_config(ngf=4, n_blocks=1)))
    try:
        main(["--help"])
    except SystemExit:
        pass
    print(allocator._applied)
""")


def _python(code: str, arg: str, **env: str) -> list[str]:
    # the child gets glibc's defaults whatever this process was started with
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUNABLES", "REFOCUSGAN_"))}
    proc = subprocess.run([sys.executable, "-c", code, arg], capture_output=True, text=True, env=keep | env,
                          cwd=REPO, timeout=120, check=True)  # fmt: skip
    return proc.stdout.split("\n")[-2].split()


@pytest.mark.skipif(not is_glibc(), reason="the setting is glibc's")
def test_the_setting_makes_freed_memory_reused_instead_of_faulted_in_again():
    # glibc's defaults often map such arrays fresh and return them on free (how often depends on what the
    # process allocated before, so it is not asserted); with the setting, later rounds reuse the first's pages
    applied, first, *later = _python(ROUNDS, "set")
    assert applied == "True" and max(map(int, later)) < 0.05 * int(first)


@pytest.mark.skipif(not is_glibc(), reason="the setting is glibc's")
@pytest.mark.parametrize("entry", ["refocusgan", "training"])
def test_command_line_entry_points_apply_it_unless_opted_out(entry):
    assert _python(ENTRY, entry) == ["True"]
    assert _python(ENTRY, entry, REFOCUSGAN_MALLOC="default") == ["False"]


def test_the_core_leaves_the_malloc_of_its_host_process_alone():
    # napari's process, or a user's script: inference must not change how it allocates
    assert _python(ENTRY, "inference") == ["None"]
