"""The malloc setting that inference and training apply (process-wide, so each case runs in a subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from napari_refocusgan.core.allocator import is_glibc

# 100 × 1 MiB arrays, written and freed, four times: the page faults of each round
ROUNDS = textwrap.dedent("""
    import resource, sys
    import numpy as np
    from napari_refocusgan.core.allocator import retain_freed_memory
    if sys.argv[1] == "inference":
        from napari_refocusgan.core.inference import deblur
        from napari_refocusgan.core.networks import Generator, deblur_config
        deblur(np.zeros((8, 8, 3), np.uint8), Generator(deblur_config(ngf=4, n_blocks=1)))
    print(retain_freed_memory())

    def faults_of_one_round():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        chunks = [np.ones(1 << 17) for _ in range(100)]
        del chunks
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    print(*[faults_of_one_round() for _ in range(4)])
""")


def _run(mode: str, **env: str) -> tuple[bool, list[int]]:
    environment = {k: v for k, v in os.environ.items() if k != "REFOCUSGAN_MALLOC"} | env
    proc = subprocess.run([sys.executable, "-c", ROUNDS, mode], capture_output=True, text=True, env=environment,
                          timeout=120, check=True)  # fmt: skip
    applied, faults = proc.stdout.split("\n")[-3:-1]
    return applied == "True", [int(f) for f in faults.split()]


@pytest.mark.skipif(not is_glibc(), reason="the setting is glibc's")
def test_inference_keeps_freed_memory_for_reuse():
    # glibc's defaults map these fresh from the OS every round; once set, later rounds reuse the first's pages
    applied, default = _run("plain", REFOCUSGAN_MALLOC="default")
    assert not applied and min(default[1:]) > 0.5 * default[0]
    applied, tuned = _run("inference")
    assert applied and max(tuned[1:]) < 0.05 * tuned[0]


def test_opting_out_leaves_malloc_alone():
    applied, _ = _run("inference", REFOCUSGAN_MALLOC="default")
    assert not applied
