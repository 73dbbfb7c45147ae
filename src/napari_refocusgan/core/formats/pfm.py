"""Portable Float Map (PFM): the HCI benchmark's ground-truth format.

Header: ``PF`` (colour) or ``Pf`` (gray), then ``width height``, then a scale whose sign gives the byte
order (negative = little-endian). Rows are stored bottom-up, so they are flipped on read and write.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..errors import RefocusError

_HEADER = re.compile(rb"\A(PF|Pf)\s+(\d+)\s+(\d+)\s+([-+0-9.eE]+)\s")


def read_pfm(path: str | Path) -> np.ndarray:
    """(H, W) float32 for ``Pf`` or (H, W, 3) for ``PF``, top row first. NaN/Inf are rejected."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise RefocusError(f"Cannot read {path}: {exc.strerror or exc}.") from exc
    match = _HEADER.match(raw[:256])
    if match is None:
        raise RefocusError(f"{path} is not a PFM file (expected a 'PF' or 'Pf' header with width, height, scale).")
    kind, width, height, scale = match.groups()
    width, height, channels = int(width), int(height), 3 if kind == b"PF" else 1
    try:
        scale = float(scale)
    except ValueError as exc:
        raise RefocusError(f"{path}: PFM scale {scale!r} is not a number.") from exc
    if width == 0 or height == 0 or scale == 0:
        raise RefocusError(f"{path}: PFM header says {width}×{height} with scale {scale}; nothing to read.")
    count = width * height * channels
    body = raw[match.end() : match.end() + 4 * count]
    if len(body) < 4 * count:
        raise RefocusError(
            f"{path} is truncated: {width}×{height}×{channels} floats need {4 * count} bytes, found {len(body)}."
        )
    data = np.frombuffer(body, dtype="<f4" if scale < 0 else ">f4").astype(np.float32)
    data = data.reshape((height, width, channels) if channels == 3 else (height, width))[::-1]
    if not np.isfinite(data).all():
        raise RefocusError(f"{path} contains NaN or Inf values; the ground truth is unusable as it is.")
    return np.ascontiguousarray(data)


def write_pfm(path: str | Path, data: np.ndarray) -> Path:
    """Write a (H, W) or (H, W, 3) array as little-endian PFM (bottom-up rows, as the format wants)."""
    arr = np.asarray(data, dtype=np.float32)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] == 3)) or arr.size == 0:
        raise RefocusError(f"PFM holds (H, W) or (H, W, 3) data; got shape {arr.shape}.")
    path = Path(path)
    kind = "PF" if arr.ndim == 3 else "Pf"
    header = f"{kind}\n{arr.shape[1]} {arr.shape[0]}\n-1\n".encode("ascii")
    path.write_bytes(header + np.ascontiguousarray(arr[::-1], dtype="<f4").tobytes())
    return path
