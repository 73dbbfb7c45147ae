"""Memory and time of reading a Lytro-Illum-sized ESLF (14×14 views of 376×541, a 5264×7574 PNG).

    python benchmarks/bench_eslf_memory.py [--dtype uint8|uint16] [--keep FILE]

Writes a synthetic ESLF to a temporary folder (or FILE), then measures each step in a fresh Python
process, so that peak resident memory (VmHWM) belongs to that step alone:

* read_image — the PNG decoded by imaging.read_image (Pillow; FFmpeg for 16-bit colour), for comparison;
* decode-ffmpeg — decoded as the ESLF reader does it (PyAV): the one full-size array every read needs;
* detect   — detect_format (decodes, then computes the lenslet statistics);
* central7 — read_lightfield(path, views=7): the paper's central 7×7 views as float32;
* central8 — views=8 (the Flowers loader's choice);
* full     — all 14×14 views as float32.

tracemalloc sees numpy's allocations (not Pillow's/FFmpeg's internal decode buffers); peak RSS (VmHWM)
sees everything, including the interpreter and libraries (reported as "baseline" from an import-only run).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from _cli import run_script  # benchmarks/ is on sys.path when run as a script

VIEW_H, VIEW_W, GRID = 376, 541, 14

# VmHWM (this process's peak resident set since exec); ru_maxrss would include the parent's peak,
# which Linux carries across fork + exec.
PEAK_RSS = r"""
def peak_rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
"""

STEP = (
    PEAK_RSS
    + r"""
import json, sys, time, tracemalloc
import numpy as np
from napari_refocusgan.core.lightfield import detect_format, read_lightfield
from napari_refocusgan.core.imaging import read_image
from napari_refocusgan.core.formats.eslf import decode_lenslet_image
step, path = sys.argv[1], sys.argv[2]
tracemalloc.start()
t0 = time.perf_counter()
if step == "read_image":
    out = read_image(path)
elif step == "decode-ffmpeg":
    out = decode_lenslet_image(path)
elif step == "detect":
    out = detect_format(path)
elif step == "central7":
    out = read_lightfield(path, views=7).views
elif step == "central8":
    out = read_lightfield(path, views=8).views
elif step == "full":
    out = read_lightfield(path).views
elapsed = time.perf_counter() - t0
_, peak = tracemalloc.get_traced_memory()
rss = peak_rss()
result = out if isinstance(out, str) or out is None else list(out.shape)
print(json.dumps({"seconds": elapsed, "traced_peak": peak, "max_rss": rss, "result": result}))
"""
)

BASELINE = (
    PEAK_RSS
    + r"""
import json
import numpy as np
from napari_refocusgan.core.lightfield import detect_format, read_lightfield
from napari_refocusgan.core.imaging import read_image
import imageio.v3, PIL.Image, av
print(json.dumps({"max_rss": peak_rss()}))
"""
)


def synthetic_eslf(dtype: str) -> np.ndarray:
    """(5264, 7574, 3) lenslet image: a photo seen with ±1 px/view parallax, outer views vignetted."""
    import skimage.data
    from skimage.transform import resize

    from napari_refocusgan.core.formats.eslf import interleave_eslf
    from napari_refocusgan.core.imaging import from_float

    base = resize(skimage.data.astronaut(), (VIEW_H + 2 * GRID, VIEW_W + 2 * GRID), anti_aliasing=True).astype(
        np.float32
    )
    yy, xx = np.mgrid[0:GRID, 0:GRID]
    gain = np.clip(1.25 - (np.hypot(yy - 6.5, xx - 6.5) / 8.0) ** 2, 0.03, 1.0)
    views = np.empty((GRID, GRID, VIEW_H, VIEW_W, 3), np.float32)
    for v in range(GRID):
        for u in range(GRID):
            dy, dx = GRID + (v - 6), GRID + (u - 6)  # 1 px per view step
            views[v, u] = base[dy : dy + VIEW_H, dx : dx + VIEW_W] * gain[v, u] * 0.5  # dark, like real data
    return from_float(interleave_eslf(views), np.dtype(dtype))


def write_png(path: Path, image: np.ndarray) -> None:
    if image.dtype == np.uint8:
        import imageio.v3 as iio

        iio.imwrite(path, image, compress_level=1)
        return
    import av  # Pillow cannot write 16-bit colour PNGs; FFmpeg's PNG encoder can

    with av.open(str(path), "w", format="image2") as out:
        stream = out.add_stream("png", rate=1)
        stream.width, stream.height, stream.pix_fmt = image.shape[1], image.shape[0], "rgb48be"
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb48le")
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def run_step(code: str, *args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"step {args[:1]} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=("uint8", "uint16"), default="uint8")
    parser.add_argument("--keep", type=Path, help="write the synthetic ESLF here and keep it")
    args = parser.parse_args()
    if args.keep is not None and args.keep.suffix.lower() != ".png":
        parser.error(f"--keep writes the ESLF as a PNG (what the benchmark decodes); name it .png, got {args.keep}")
    if args.keep is not None:  # before the render, which takes a while
        from napari_refocusgan.core.imaging import check_output_path

        check_output_path(args.keep, dtype=np.dtype(args.dtype), shape=(1, 1, 3))
        args.keep.parent.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory() as tmp:
        path = args.keep or Path(tmp) / f"synthetic_{args.dtype}_eslf.png"
        image = synthetic_eslf(args.dtype)
        write_png(path, image)
        itemsize = image.dtype.itemsize
        del image
        mib = 2**20
        print(f"ESLF {GRID * VIEW_H}×{GRID * VIEW_W}×3 {args.dtype}, {path.stat().st_size / mib:.0f} MiB on disk")
        print(f"  decoded lenslet image: {GRID * VIEW_H * GRID * VIEW_W * 3 * itemsize / mib:.0f} MiB")
        for n in (7, 8, 14):
            print(f"  {n}×{n} float32 views: {n * n * VIEW_H * VIEW_W * 3 * 4 / mib:.0f} MiB")
        base = run_step(BASELINE)["max_rss"]
        print(f"  baseline peak RSS (imports only): {base / mib:.0f} MiB\n")
        print(
            f"{'step':>13} {'seconds':>8} {'traced peak MiB':>16} {'peak RSS MiB':>12} {'RSS − baseline':>15}  result"
        )
        for step in ("read_image", "decode-ffmpeg", "detect", "central7", "central8", "full"):
            r = run_step(STEP, step, str(path))
            print(
                f"{step:>13} {r['seconds']:8.2f} {r['traced_peak'] / mib:16.0f} {r['max_rss'] / mib:12.0f} "
                f"{(r['max_rss'] - base) / mib:15.0f}  {r['result']}"
            )


if __name__ == "__main__":
    run_script(main)
