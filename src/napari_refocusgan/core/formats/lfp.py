"""Lytro ``.lfp`` / ``.lfr`` containers: processed focal stacks and depth maps read, raw files refused.

Container: a 12-byte file magic ``\\x89LFP\\r\\n\\x1a\\n\\0\\0\\0\\x01`` and a big-endian uint32 header length,
then sections. Each section: a 12-byte magic (``\\x89LFM…`` JSON metadata, ``\\x89LFC…`` content), a
big-endian uint32 data length, a 45-byte ``sha1-…`` id, 35 zero bytes, the data, zero padding to 16 bytes.
The JSON refers to content sections by their sha1 ids.

What Lytro Desktop writes for a first-generation camera (``-stk.lfp``, ``-dm.lfp``):

* ``com.lytro.acceleration.refocusStack``: Engine 1 — ``imageArray`` of JPEG slices, each with a ``lambda``;
  Engine 10 — ``blockOfImages`` (H.264, one frame per ``metadataArray`` entry with its ``lambda``), decoded
  with PyAV. Both carry ``depthLut``: raw little-endian float32, ``height×width``, in lambda units.
* ``com.lytro.acceleration.edofParallax``: H.264 extended-depth-of-field views at parallax ``coord``s; the
  one at (0, 0) is kept as the all-in-focus centre view (``metadata["all_in_focus"]``).
* ``com.lytro.acceleration.depthMap``: raw float32 ``depthMap`` (lambda units) and ``confidenceMap``.

Raw sensor files (a frame whose ``imageRef`` content is present) need the camera's calibration to become
views; they are refused with a message that says so.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from ..errors import RefocusError
from ..imaging import to_float
from ..lightfield import LightField

FILE_MAGIC = b"\x89LFP\r\n\x1a\n\x00\x00\x00\x01"
SECTION_PREFIX = {b"\x89LFM\r\n\x1a\n": "M", b"\x89LFC\r\n\x1a\n": "C"}  # first 8 of the 12 magic bytes
_SECTION_MAGIC = {"M": b"\x89LFM\r\n\x1a\n\x00\x00\x00\x00", "C": b"\x89LFC\r\n\x1a\n\x00\x00\x00\x00"}
SHA1_LEN, SECTION_HEADER = 45, 96  # 12 magic + 4 length + 45 id + 35 zeros
ACCEL = "com.lytro.acceleration."

RAW_HELP = (
    "Decoding a raw Lytro light field into views needs the camera's white-image calibration "
    "(the caldata-*.tar / white images of that very camera, from its SD card or the Lytro Desktop library), "
    "plus a lenslet-grid fit, demosaicing and rectification, which this plugin does not do. "
    "Open a processed file instead: a focal stack (-stk.lfp) or an ESLF PNG exported by Lytro Desktop, "
    "or the views decoded by plenopticam or the Matlab Light Field Toolbox."
)


@dataclass(frozen=True)
class Section:
    kind: str  # "M" (JSON metadata) or "C" (content)
    sha1: str
    offset: int  # of the data, from the start of the file
    length: int


def is_lfp(path: str | Path) -> bool:
    """True when the file starts with the LFP magic (never raises)."""
    try:
        with open(path, "rb") as f:
            return f.read(len(FILE_MAGIC)) == FILE_MAGIC
    except OSError:
        return False


def _ceil16(n: int) -> int:
    return (n + 15) // 16 * 16


def parse_sections(data: bytes, name: str = "LFP data") -> list[Section]:
    """All sections of a container, in file order; RefocusError for a bad magic or a truncated section."""
    if data[: len(FILE_MAGIC)] != FILE_MAGIC:
        raise RefocusError(f"{name} is not a Lytro LFP/LFR file (the file magic \\x89LFP is missing).")
    if len(data) < 16:
        raise RefocusError(f"{name} ends after {len(data)} bytes, inside the file header: it is truncated.")
    (header_len,) = struct.unpack(">I", data[12:16])
    pos = _ceil16(16 + header_len)
    sections: list[Section] = []
    while pos < len(data):
        if not any(data[pos : pos + 16]):  # trailing zero padding
            if not any(data[pos:]):
                break
            raise RefocusError(f"{name} is corrupt: zero bytes then data at offset {pos}.")
        if pos + SECTION_HEADER > len(data):
            raise RefocusError(f"{name} is truncated: a section header at offset {pos} is cut short.")
        kind = SECTION_PREFIX.get(bytes(data[pos : pos + 8]))
        if kind is None:
            raise RefocusError(f"{name} is corrupt: no LFM/LFC section magic at offset {pos}.")
        (length,) = struct.unpack(">I", data[pos + 12 : pos + 16])
        sha1 = bytes(data[pos + 16 : pos + 16 + SHA1_LEN]).rstrip(b"\0").decode("ascii", errors="replace")
        start = pos + SECTION_HEADER
        if start + length > len(data):
            raise RefocusError(
                f"{name} is truncated: section {sha1} at offset {pos} declares {length} bytes but only "
                f"{len(data) - start} remain."
            )
        sections.append(Section(kind, sha1, start, length))
        pos = _ceil16(start + length)
    if not sections:
        raise RefocusError(f"{name} holds no sections.")
    return sections


def section_id(data: bytes) -> str:
    return "sha1-" + hashlib.sha1(data).hexdigest()


def pack_lfp(sections: Sequence[tuple[str, bytes]]) -> bytes:
    """Build a container from (kind "M"/"C", data) pairs; each section's id is the sha1 of its data,
    as Lytro writes it (see :func:`section_id`)."""
    out = bytearray(FILE_MAGIC + struct.pack(">I", 0))
    for kind, payload in sections:
        if kind not in _SECTION_MAGIC:
            raise RefocusError(f"LFP section kind must be 'M' or 'C', got {kind!r}.")
        ident = section_id(payload).encode("ascii").ljust(SHA1_LEN, b"\0")
        out += _SECTION_MAGIC[kind] + struct.pack(">I", len(payload)) + ident + b"\0" * 35 + payload
        out += b"\0" * (_ceil16(len(out)) - len(out))
    return bytes(out)


class LFPFile:
    """A parsed container: sections by id and the JSON metadata sections, decoded on demand."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.data = self.path.read_bytes()
        except OSError as exc:
            raise RefocusError(f"Cannot read {self.path}: {exc.strerror or exc}.") from exc
        self.sections = parse_sections(self.data, str(self.path))
        self.by_id = {s.sha1: s for s in self.sections}

    def payload(self, ref: str, what: str) -> bytes:
        section = self.by_id.get(ref)
        if section is None:
            raise RefocusError(f"{self.path}: the {what} refers to section {ref}, which the file does not contain.")
        return self.data[section.offset : section.offset + section.length]

    @cached_property
    def metadata(self) -> list[dict]:
        """Every LFM section parsed as JSON, in file order."""
        out = []
        for s in self.sections:
            if s.kind != "M":
                continue
            raw = self.data[s.offset : s.offset + s.length].rstrip(b"\0")
            try:
                out.append(json.loads(raw.decode("utf-8")))
            except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:  # nesting too deep: corrupt
                raise RefocusError(f"{self.path}: metadata section {s.sha1} is not valid JSON ({exc}).") from exc
        if not out:
            raise RefocusError(f"{self.path} holds no metadata (LFM) section.")
        return out


def _walk(node) -> Iterator[dict]:
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


def _raw_floats(payload: bytes, width: int, height: int, what: str, path: Path) -> np.ndarray:
    if len(payload) != 4 * width * height:
        raise RefocusError(
            f"{path}: the {what} should hold {width}×{height} float32 values ({4 * width * height} bytes) "
            f"but has {len(payload)} bytes."
        )
    out = np.frombuffer(payload, dtype="<f4").reshape(height, width).astype(np.float32)
    if not np.isfinite(out).all():
        raise RefocusError(f"{path}: the {what} contains NaN or Inf values.")
    return out


def _decode_jpeg(payload: bytes, what: str, path: Path) -> np.ndarray:
    import imageio.v3 as iio

    try:
        img = iio.imread(payload, extension=".jpg")
    except Exception as exc:  # decoders raise many types; all mean "not a readable JPEG"
        raise RefocusError(f"{path}: cannot decode the {what} as JPEG: {exc}") from exc
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    return to_float(img[..., :3], name=f"{path.name} {what}")


def _decode_h264(payload: bytes, what: str, path: Path, *, stop_after: int | None = None) -> list[np.ndarray]:
    """RGB uint8 frames of an H.264 elementary stream, in display order (at most ``stop_after``)."""
    try:
        import av
    except ImportError as exc:
        raise RefocusError(
            f"{path}: the {what} is H.264 video; decoding it needs PyAV (pip install av), which is not installed."
        ) from exc
    frames: list[np.ndarray] = []
    try:
        with av.open(io.BytesIO(payload), format="h264") as container:
            for frame in container.decode(video=0):
                frames.append(frame.to_ndarray(format="rgb24"))
                if stop_after is not None and len(frames) >= stop_after:
                    break
    except av.FFmpegError as exc:
        raise RefocusError(f"{path}: cannot decode the {what} (H.264): {exc}") from exc
    return frames


def _refocus_stack(lfp: LFPFile, content: dict) -> tuple[np.ndarray, list[float], dict]:
    path = lfp.path
    if "imageArray" in content:  # Engine 1: one JPEG per slice
        entries = content["imageArray"]
        slices = [
            _decode_jpeg(lfp.payload(e["imageRef"], f"slice {i}"), f"slice {i}", path) for i, e in enumerate(entries)
        ]
        encoding = "jpeg"
    elif "blockOfImages" in content:  # Engine 10: H.264, one frame per metadataArray entry
        block = content["blockOfImages"]
        if block.get("representation") != "h264":
            raise RefocusError(
                f"{path}: refocus stack encoded as {block.get('representation')!r}; only H.264 is known."
            )
        entries = block["metadataArray"]
        frames = _decode_h264(lfp.payload(block["blockOfImagesRef"], "refocus stack"), "refocus stack", path)
        if len(frames) != len(entries):
            raise RefocusError(
                f"{path}: the refocus stack declares {len(entries)} slices but its H.264 block decodes to "
                f"{len(frames)} frames."
            )
        slices = [to_float(f, name=f"{path.name} slice {i}") for i, f in enumerate(frames)]
        encoding = "h264"
    else:
        raise RefocusError(
            f"{path}: refocus stack without imageArray or blockOfImages; this Lytro variant is not supported."
        )
    if not entries:
        raise RefocusError(f"{path}: the refocus stack is empty.")
    shapes = {s.shape for s in slices}
    if len(shapes) != 1:
        raise RefocusError(f"{path}: refocus slices differ in size ({sorted(shapes)}).")
    lambdas = [float(e["lambda"]) for e in entries]
    order = np.argsort(lambdas, kind="stable")
    stack = np.stack([slices[i] for i in order])
    info = {"stack_encoding": encoding, "default_lambda": content.get("defaultLambda")}
    return stack, [lambdas[i] for i in order], info


def _all_in_focus(lfp: LFPFile, content: dict) -> np.ndarray | None:
    """The EDOF view at parallax coord (0, 0), decoding frames only up to it."""
    block = content.get("blockOfImages", {})
    entries = block.get("metadataArray") or []
    if block.get("representation") != "h264" or not entries:
        return None
    dist = [np.hypot(e.get("coord", {}).get("x", 1.0), e.get("coord", {}).get("y", 1.0)) for e in entries]
    idx = int(np.argmin(dist))
    frames = _decode_h264(
        lfp.payload(block["blockOfImagesRef"], "parallax views"), "parallax views", lfp.path, stop_after=idx + 1
    )
    if len(frames) <= idx:
        raise RefocusError(f"{lfp.path}: the parallax block decodes to {len(frames)} frames; view {idx} is missing.")
    return to_float(frames[idx], name=f"{lfp.path.name} all-in-focus view")


def classify(lfp: LFPFile) -> str:
    """'processed' (focal stack / depth map), 'raw' (sensor image), 'storage' or 'unknown'."""
    metas = lfp.metadata
    if any(str(n.get("type", "")).startswith(ACCEL) for m in metas for n in _walk(m)):
        return "processed"
    top = metas[0]
    frames = (top.get("picture", {}).get("frameArray") or []) + (top.get("frames") or [])
    refs = [f.get("frame", {}).get("imageRef") for f in frames if isinstance(f, dict)]
    if any(r in lfp.by_id for r in refs if r):
        return "raw"
    if any(n.get("representation") == "rawPacked" for m in metas for n in _walk(m)):
        return "raw"
    if "files" in top:
        return "storage"
    return "unknown"


def read_lfp(path: str | Path) -> LightField:
    """A processed Lytro file as a LightField: ``focal_stack`` sorted by lambda (ascending) with the lambdas
    as ``stack_labels``, ``depth`` from the depth LUT or depth map (lambda units)."""
    lfp = LFPFile(path)
    try:
        return _read_processed(lfp)
    except RefocusError:
        raise
    except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:  # JSON not shaped as expected
        raise RefocusError(f"{lfp.path}: unexpected Lytro metadata layout ({exc.__class__.__name__}: {exc}).") from exc


def _read_processed(lfp: LFPFile) -> LightField:
    path = lfp.path
    kind = classify(lfp)
    if kind == "raw":
        raise RefocusError(f"{path} is a raw Lytro sensor image, not a processed focal stack. {RAW_HELP}")
    if kind == "storage":
        raise RefocusError(f"{path} is a Lytro storage file (camera data or calibration), not a picture.")
    if kind == "unknown":
        raise RefocusError(
            f"{path} is a Lytro container without a focal stack, depth map or raw image that this plugin knows."
        )
    accels = [n for m in lfp.metadata for n in _walk(m) if str(n.get("type", "")).startswith(ACCEL)]
    lf = LightField(source="lytro-lfp", path=path)
    meta: dict = {"accelerations": [a["type"] for a in accels]}
    for accel in accels:
        content = accel.get("vendorContent", {})
        kind = accel["type"][len(ACCEL) :]
        meta.setdefault("generator", accel.get("generator"))
        if kind == "refocusStack" and lf.focal_stack is None:
            lf.focal_stack, lf.stack_labels, info = _refocus_stack(lfp, content)
            meta.update(info)
            lut = content.get("depthLut")
            if lut and lf.depth is None:
                lf.depth = _raw_floats(
                    lfp.payload(lut["imageRef"], "depth LUT"), lut["width"], lut["height"], "depth LUT", path
                )
                meta["depth_kind"] = "depth LUT (lambda units)"
        elif kind == "depthMap":
            dm = content["depthMap"]
            w, h = content["width"], content["height"]
            lf.depth = _raw_floats(lfp.payload(dm["imageRef"], "depth map"), w, h, "depth map", path)
            meta["depth_kind"] = "depth map (lambda units)"
            meta["lambda_range"] = (content.get("minLambda"), content.get("maxLambda"))
            conf = content.get("confidenceMap")
            if conf:
                meta["confidence"] = _raw_floats(
                    lfp.payload(conf["imageRef"], "confidence map"), w, h, "confidence map", path
                )
        elif kind == "edofParallax":
            view = _all_in_focus(lfp, content)
            if view is not None:
                meta["all_in_focus"] = view
    if lf.focal_stack is None and lf.depth is None:
        raise RefocusError(
            f"{path} holds neither a refocus stack nor a depth map ({', '.join(meta['accelerations'])})."
        )
    if lf.stack_labels is not None:
        meta["stack_label_name"] = "lambda"
    lf.metadata = meta
    return lf
