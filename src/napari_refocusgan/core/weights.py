"""Generator weights: safetensors files that describe themselves, and the registry of shipped weights.

File layout (``FORMAT``): the tensors are the generator's ``state_dict()``; the safetensors metadata
(str → str) holds ``format``, ``role`` (``deblur`` = G1 | ``refocus`` = G2), ``config`` (JSON of
:meth:`GeneratorConfig.to_dict`), ``sml`` (JSON of the :class:`SMLParams` of G1's focus channel) and any
model-card strings given to :func:`save_generator`.

The registry (``weights/registry.json`` inside the package) is a JSON list of entries
``{name, role, file, sha256, config, deltas, sml, default, training, metrics}``; ``file`` is relative to
the registry's folder. Shipped weights are checked against their sha256 on every load.

Only safetensors are read: pickles (``.pt``/``.pth``/``.ckpt``) can run code when loaded, so they are
refused, never unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .devices import pick_device
from .errors import RefocusError
from .focus import SMLParams
from .networks import Generator, GeneratorConfig

FORMAT = "napari-refocusgan/1"
ROLES = ("deblur", "refocus")
RESERVED_METADATA = ("format", "role", "config", "sml")
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
REGISTRY_PATH = WEIGHTS_DIR / "registry.json"

# A safetensors header is JSON behind an 8-byte little-endian length; anything much larger is not one.
_MAX_HEADER_BYTES = 100_000_000
MAX_BLOCKS = 64  # residual blocks a weights file may ask for (the paper: 9; the shipped networks: 6)


@dataclass(frozen=True)
class ModelEntry:
    """One registry entry: shipped weights and their model card."""

    name: str
    role: str
    file: str
    sha256: str
    config: GeneratorConfig
    sml: SMLParams = field(default_factory=SMLParams)
    default: bool = False
    training: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    registry: Path = REGISTRY_PATH

    @property
    def path(self) -> Path:
        return (self.registry.parent / self.file).resolve()

    @property
    def deltas(self) -> tuple[float, ...]:
        return self.config.deltas

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "role": self.role,
            "file": self.file,
            "sha256": self.sha256,
            "config": self.config.to_dict(),
            "deltas": list(self.config.deltas),
            "sml": asdict(self.sml),
            "default": self.default,
            "training": self.training,
            "metrics": self.metrics,
        }


@dataclass
class LoadedModel:
    """A generator ready for inference (eval mode, on ``device``) with where it came from."""

    generator: Generator
    role: str
    name: str
    source: Path | None
    sml: SMLParams = field(default_factory=SMLParams)
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def config(self) -> GeneratorConfig:
        return self.generator.cfg

    def describe(self) -> str:
        return f"{self.name} ({self.role}, {self.source or 'in memory'})"


# --------------------------------------------------------------------------------------------- saving


def role_of(config: GeneratorConfig) -> str:
    """G2 takes δ; G1 does not."""
    return "deblur" if config.delta_mode == "none" else "refocus"


def save_generator(
    model: Generator,
    path: str | os.PathLike,
    role: str,
    extra_metadata: dict | None = None,
    *,
    sml_params: SMLParams | None = None,
) -> str:
    """Write ``model`` to ``path`` as a self-describing safetensors file; returns its sha256 (hex).

    Stable signature (the training ``export`` command calls it). ``extra_metadata``: the model card,
    values converted to strings (non-strings as JSON). The reserved keys format/role/config/sml are
    written here; an extra key with one of those names is kept as ``training_<key>``.
    """
    from safetensors.torch import save

    if role not in ROLES:
        raise RefocusError(f"role must be one of {', '.join(ROLES)}, got {role!r}.")
    if not isinstance(model, Generator):
        raise RefocusError(f"expected a Generator, got {type(model).__name__}.")
    if role != role_of(model.cfg):
        raise RefocusError(
            f"a {role_of(model.cfg)} generator (δ mode {model.cfg.delta_mode!r}) cannot be saved as {role!r}."
        )
    metadata = _model_card(extra_metadata or {})
    metadata.update(
        format=FORMAT,
        role=role,
        config=json.dumps(model.cfg.to_dict()),
        sml=json.dumps(asdict(sml_params or SMLParams())),
    )
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()}
    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    try:
        tmp.write_bytes(_sorted_metadata(save(tensors, metadata=metadata)))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # weights are meant to be shared, whatever mode a leftover .part had
        os.replace(tmp, path)  # never leave a half-written weights file under the final name
    except Exception as exc:  # safetensors reports I/O problems with its own exception types
        tmp.unlink(missing_ok=True)
        raise RefocusError(f"cannot write weights to {path}: {exc}") from exc
    return file_sha256(path)


def _sorted_metadata(blob: bytes) -> bytes:
    """A safetensors file with its metadata keys in sorted order. safetensors writes them in the order of a
    Rust hash map, which changes from one save to the next, so the same weights exported twice would get
    different sha256s. The tensors' entries and data are kept as they are."""
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n])
    metadata = header.pop("__metadata__", None)
    if metadata is not None:
        header = {"__metadata__": dict(sorted(metadata.items())), **header}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the format pads the header to a multiple of 8 bytes
    return struct.pack("<Q", len(text)) + text + blob[8 + n :]


def _model_card(metadata: dict, *, drop_reserved: bool = False) -> dict[str, str]:
    """The training part of a metadata dict: the file's own reserved keys dropped, or a caller's
    colliding keys renamed as in :func:`save_generator`."""
    card = {}
    for key, value in metadata.items():
        key = str(key)
        if key in RESERVED_METADATA:
            if drop_reserved:
                continue
            key = f"training_{key}"
        card[key] = value if isinstance(value, str) else json.dumps(value)
    return card


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------- registry


def _read_registry(registry: str | os.PathLike | None) -> tuple[Path, list[dict]]:
    path = Path(registry) if registry is not None else REGISTRY_PATH
    if not path.exists():
        return path, []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RefocusError(f"weights registry {path} is unreadable: {exc}") from exc
    if not isinstance(data, list) or not all(isinstance(e, dict) for e in data):
        raise RefocusError(f"weights registry {path} must be a JSON list of entries.")
    return path, data


def _entry(raw: dict, registry: Path) -> ModelEntry:
    try:
        config = GeneratorConfig.from_dict(raw["config"])
        return ModelEntry(
            name=str(raw["name"]),
            role=str(raw["role"]),
            file=str(raw["file"]),
            sha256=str(raw["sha256"]).lower(),
            config=config,
            sml=SMLParams(**raw.get("sml", {})),
            default=bool(raw.get("default", False)),
            training=dict(raw.get("training", {})),
            metrics=dict(raw.get("metrics", {})),
            registry=registry,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise RefocusError(f"weights registry {registry}: bad entry {raw.get('name', raw)!r}: {exc}") from exc


def list_models(registry: str | os.PathLike | None = None) -> list[ModelEntry]:
    """The registered (shipped) weights, in registry order."""
    path, raw = _read_registry(registry)
    return [_entry(e, path) for e in raw]


def default_model(role: str, registry: str | os.PathLike | None = None) -> ModelEntry:
    """The entry marked ``default`` for ``role``, else the first entry of that role."""
    if role not in ROLES:
        raise RefocusError(f"role must be one of {', '.join(ROLES)}, got {role!r}.")
    entries = [e for e in list_models(registry) if e.role == role]
    if not entries:
        flag = "--weights FILE.safetensors"
        raise RefocusError(f"no shipped weights for {role} (G{1 if role == 'deblur' else 2}); pass {flag}.")
    return next((e for e in entries if e.default), entries[0])


def register_weights(
    path: str | os.PathLike,
    *,
    name: str,
    role: str | None = None,
    metadata: dict | None = None,
    metrics: dict | None = None,
    default: bool = True,
    registry: str | os.PathLike | None = None,
) -> ModelEntry:
    """Add (or replace, by name) the entry of the weights file ``path`` in the registry.

    The file is validated first; its config, δ set and SML parameters are taken from the file. The file
    should sit in the registry's folder (shipped weights); otherwise the entry holds a relative path to it.
    ``metadata``: the training model card (command, data, steps, time, …); ``default``: make it the
    default of its role (clearing the flag on the others of that role).
    """
    # validated on its own: a re-export replaces a shipped file whose old hash is still registered
    model = load_generator(Path(path), role=role, registry=registry, as_new_file=True)
    reg_path, raw = _read_registry(registry)
    file = os.path.relpath(Path(path).resolve(), reg_path.resolve().parent)
    entry = ModelEntry(
        name=name,
        role=model.role,
        file=Path(file).as_posix(),
        sha256=file_sha256(path),
        config=model.config,
        sml=model.sml,
        default=default,
        training=_model_card(metadata) if metadata is not None else _model_card(model.metadata, drop_reserved=True),
        metrics=dict(metrics or {}),
        registry=reg_path,
    )
    kept = [e for e in raw if e.get("name") != name]
    if default:
        for e in kept:
            if e.get("role") == entry.role:
                e["default"] = False
    kept.append(entry.to_json())
    reg_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = reg_path.with_name(reg_path.name + ".part")
    tmp.write_text(json.dumps(kept, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, reg_path)
    return entry


# --------------------------------------------------------------------------------------------- loading


def _sniff_safetensors(path: Path) -> None:
    """Refuse anything that is not a safetensors file before any parser sees it."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
        size = path.stat().st_size
    except OSError as exc:
        raise RefocusError(f"cannot read weights {path}: {exc}") from exc
    if len(head) == 9:
        (header_len,) = struct.unpack("<Q", head[:8])
        if 2 <= header_len <= min(_MAX_HEADER_BYTES, size - 8) and head[8:9] == b"{":
            return
    # torch.save writes a zip (PK…) or, in the legacy format, a pickle (PROTO opcode 0x80, then protocol 2–5)
    pickle_start = head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")
    if head[:4] == b"PK\x03\x04" or (pickle_start and head[8:9] != b"{"):  # "{": a cut safetensors header
        raise RefocusError(
            f"{path} looks like a PyTorch/pickle file: only safetensors are accepted; we never unpickle "
            "(loading a pickle can run arbitrary code). Convert it with the training 'export' command."
        )
    raise RefocusError(f"{path} is not a safetensors file (or it is truncated/corrupt).")


def _resolve(
    spec: str | os.PathLike | None, role: str | None, registry, as_new_file: bool = False
) -> tuple[Path, ModelEntry | None]:
    if spec is None or (isinstance(spec, str) and spec in ROLES):
        entry = default_model(role if spec is None else spec, registry)
        return entry.path, entry
    if isinstance(spec, str):
        for entry in list_models(registry):
            if entry.name == spec:
                return entry.path, entry
    path = Path(spec).expanduser()
    if not path.exists():
        names = ", ".join(e.name for e in list_models(registry)) or "none"
        raise RefocusError(f"weights {str(spec)!r}: no such file and no such registered name (registered: {names}).")
    if path.is_dir():
        raise RefocusError(f"weights {path} is a folder; pass a .safetensors file.")
    if as_new_file:
        return path, None
    resolved = path.resolve()
    shipped = next((e for e in list_models(registry) if e.path == resolved), None)
    return path, shipped


def weights_file(spec: str | os.PathLike, registry: str | os.PathLike | None = None) -> Path:
    """The file that ``spec`` (a role, a registered name or a path) names, without loading or checking it."""
    return _resolve(spec, None, registry)[0]


def load_generator(
    spec: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    *,
    role: str | None = None,
    registry: str | os.PathLike | None = None,
    as_new_file: bool = False,
) -> LoadedModel:
    """Load generator weights, checked, in eval mode on ``device``.

    ``spec``: a role (``"deblur"``/``"refocus"``: the shipped default), a registered name, or a path to a
    ``.safetensors`` file; None means the default for ``role``. ``role``: when given, the file must hold
    a generator of that role. Shipped files are checked against the registry's sha256 and config; every
    file's keys and shapes must match its config. Every failure is a :class:`RefocusError`.
    ``as_new_file``: a path is checked on its own, not against a registry entry for the same file (used
    when that entry is about to be replaced).
    """
    device = pick_device(device, default="cpu")  # before the file is read: a bad device costs nothing
    if isinstance(spec, str) and not spec.strip():  # Path("") is "." (a folder): say what is wrong instead
        raise RefocusError("the weights name or path is empty; give a role, a registered name or a .safetensors "
                           "path, or None for the shipped default.")  # fmt: skip
    if role is not None and role not in ROLES:
        raise RefocusError(f"role must be one of {', '.join(ROLES)}, got {role!r}.")
    if spec is None and role is None:
        raise RefocusError("say which weights to load: a role, a registered name or a .safetensors path.")
    path, entry = _resolve(spec, role, registry, as_new_file)
    if not path.exists():
        shipped = path.resolve().parent == WEIGHTS_DIR
        remedy = "reinstall the package" if shipped else "restore the file, or export the weights to it again"
        raise RefocusError(f"{'shipped' if shipped else 'registered'} weights {entry.name!r} are missing: {path} "
                           f"({remedy}).")  # fmt: skip
    _sniff_safetensors(path)
    try:
        digest = file_sha256(path) if entry is not None else None
    except OSError as exc:
        raise RefocusError(f"cannot read weights {path}: {exc}") from exc
    if entry is not None and digest != entry.sha256:
        raise RefocusError(
            f"{path} does not match the registry's sha256 for {entry.name!r} "
            f"(expected {entry.sha256[:12]}…, found {digest[:12]}…): the file is corrupt or was replaced."
        )
    metadata, tensors = _read_safetensors(path)
    config, sml_params, file_role = _description(path, metadata, role)
    if entry is not None and entry.config != config:
        raise RefocusError(f"{path}: its config differs from the registry entry {entry.name!r}.")

    if not (isinstance(config.n_blocks, int) and 0 <= config.n_blocks <= MAX_BLOCKS):
        raise RefocusError(f"{path}: its config asks for {config.n_blocks!r} residual blocks; a whole number up "
                           f"to {MAX_BLOCKS} is needed (the paper has 9).")  # fmt: skip

    def build() -> Generator:
        try:
            return Generator(config)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise RefocusError(f"{path}: cannot build a generator from its config: {exc}") from exc

    # first on the meta device (no memory): a small file whose config asks for a huge network is refused
    # before that network is allocated
    with torch.device("meta"):
        skeleton = build()
    check_state_dict(skeleton, tensors, source=str(path))
    generator = build()
    generator.load_state_dict({k: v.to(torch.float32) for k, v in tensors.items()}, strict=True)
    generator.eval().to(device)
    name = entry.name if entry is not None else metadata.get("name", path.stem)
    return LoadedModel(generator, file_role, name, path, sml_params, metadata)


def _description(path: Path, metadata: dict[str, str], role: str | None) -> tuple[GeneratorConfig, SMLParams, str]:
    """The config, SML parameters and role that a weights file's metadata give, checked against each other and
    against the ``role`` asked for."""
    if metadata.get("format") != FORMAT:
        raise RefocusError(
            f"{path} is a safetensors file but not napari-refocusgan weights (metadata format "
            f"{metadata.get('format')!r}, expected {FORMAT!r}); save weights with save_generator / training export."
        )
    try:
        config = GeneratorConfig.from_dict(json.loads(metadata["config"]))
        sml_params = SMLParams(**json.loads(metadata.get("sml", "{}")))
        sml_params.check()
        file_role = metadata["role"]
    except (KeyError, TypeError, ValueError, json.JSONDecodeError) as exc:
        raise RefocusError(f"{path}: unreadable model description in its metadata: {exc}") from exc
    if file_role not in ROLES or file_role != role_of(config):
        raise RefocusError(f"{path}: role {file_role!r} does not fit its config (δ mode {config.delta_mode!r}).")
    if role is not None and file_role != role:
        raise RefocusError(f"{path} holds a {file_role} generator; a {role} generator is needed here.")
    return config, sml_params, file_role


def read_config(
    spec: str | os.PathLike, *, role: str | None = None, registry: str | os.PathLike | None = None
) -> GeneratorConfig:
    """The generator config that weights ``spec`` (as :func:`load_generator` takes it) describe, from the file's
    header alone: no tensor is read and nothing is hashed, so a widget can show a model's δ range when it is
    chosen. :func:`load_generator` still checks everything before the model runs."""
    path, _ = _resolve(spec, role, registry)
    _sniff_safetensors(path)
    metadata, _ = _read_safetensors(path, tensors=False)
    return _description(path, metadata, role)[0]


def _read_safetensors(path: Path, *, tensors: bool = True) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """A weights file's metadata and its tensors (none when not ``tensors``), after :func:`_sniff_safetensors`;
    a file the parser cannot read is one clear error."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return dict(f.metadata() or {}), ({k: f.get_tensor(k) for k in f.keys()} if tensors else {})
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise RefocusError(f"{path} is not a readable safetensors file (corrupt or truncated): {exc}") from exc


def check_state_dict(generator: Generator, tensors: dict[str, torch.Tensor], *, source: str = "weights") -> None:
    """Raise a RefocusError listing missing, unexpected and wrongly shaped tensors, and non-finite values."""
    expected = {k: tuple(v.shape) for k, v in generator.state_dict().items()}
    problems = []
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing:
        problems.append(f"missing {len(missing)}: {_short(missing)}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)}: {_short(unexpected)}")
    shapes = [
        f"{k} {tuple(tensors[k].shape)} ≠ {expected[k]}"
        for k in expected
        if k in tensors and tuple(tensors[k].shape) != expected[k]
    ]
    if shapes:
        problems.append(f"wrong shape {len(shapes)}: {_short(shapes)}")
    dtypes = [f"{k} {v.dtype}" for k, v in tensors.items() if k in expected and not v.is_floating_point()]
    if dtypes:  # integer weights would load as whole numbers: a network that does nothing useful
        problems.append(f"not floating point {len(dtypes)}: {_short(dtypes)}")
    if problems:
        raise RefocusError(f"{source} does not match its generator config: " + "; ".join(problems) + ".")
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise RefocusError(f"{source} has NaN/Inf weights in {_short(bad)}; the file is corrupt.")


def _short(items: list[str], n: int = 6) -> str:
    return ", ".join(items[:n]) + (f", … ({len(items) - n} more)" if len(items) > n else "")
