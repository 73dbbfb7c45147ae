"""Checkpoint → the plugin's weight file (safetensors with a model card), optionally registered."""

from __future__ import annotations

import os
from pathlib import Path

from napari_refocusgan.core import weights
from napari_refocusgan.core.errors import RefocusError
from napari_refocusgan.core.imaging import check_writable

from .train import CHECKPOINT_NAME, LOG_NAME, generator_from_checkpoint, load_checkpoint, read_log_rows


def _training_seconds(log: Path, step: int) -> str:
    """Wall-clock training time up to ``step`` from the run's log (resumed sessions added up), or '' when
    the log is missing or unreadable (the weights are still worth exporting)."""
    if not log.is_file():
        return ""
    try:
        times = [float(row["time_s"]) for row in read_log_rows(log, step)]  # every row has one: read_log_rows
    except RefocusError:
        return ""
    return f"{times[-1]:.0f}" if times else ""


def _check_output(out: Path, given: str | os.PathLike) -> None:
    """Refuse, before the checkpoint is read, an output that is not a new or writable ``.safetensors`` file:
    any other name could be the run's own checkpoint or log, the registry, or a user's file."""
    if out.is_dir() or os.fspath(given).endswith(("/", os.sep)):  # Path() drops a trailing slash
        raise RefocusError(f"{given} names a folder: give the weights file's name, e.g. {out / 'g1.safetensors'}")
    if out.suffix.lower() != ".safetensors":
        raise RefocusError(f"{out}: weights are written as .safetensors; name the file so "
                           f"(e.g. {out.stem}.safetensors)")  # fmt: skip
    if out.exists() and not out.is_file():
        raise RefocusError(f"{out} exists and is not a regular file; write the weights elsewhere")
    if not out.parent.is_dir():
        raise RefocusError(f"cannot write {out}: folder {out.parent} does not exist")
    check_writable(out)  # a read-only file, or a folder where no new file can be made
    if out.is_file():  # save_generator writes NAME.part beside it and renames: the folder must take a new file
        check_writable(out.with_name(out.name + ".part"))


def _check_registry_use(out: Path, name: str, role: str, registry: bool, registry_path) -> None:
    """Refuse an export that would break the registry: overwriting a registered file (its sha256 would no
    longer match), two entries sharing one file, a name of another role replaced, or a role's name."""
    entries = weights.list_models(registry_path)
    owner = next((e for e in entries if e.path == out.resolve()), None)
    if owner is not None and not registry:
        raise RefocusError(f"{out} is the file of the registered weights {owner.name!r}: overwriting it would fail "
                           f"their sha256 check; write elsewhere, or replace them with --registry --name {owner.name}")  # fmt: skip
    if not registry:
        return
    if name in weights.ROLES:
        raise RefocusError(f"--name {name!r} is a role (it selects the role's default weights, so an entry of that "
                           "name could never be selected); choose another name, e.g. " + f"{name}-custom")  # fmt: skip
    if owner is not None and owner.name != name:
        raise RefocusError(f"{out} is already the file of the registered entry {owner.name!r}; two entries cannot "
                           f"share one file: use --name {owner.name} to replace it, or write to another file")  # fmt: skip
    same = next((e for e in entries if e.name == name), None)
    if same is not None and same.role != role:
        raise RefocusError(f"{name!r} is registered as {same.role} weights and this checkpoint trains {role}: "
                           "choose another --name")  # fmt: skip


def export_checkpoint(
    checkpoint: str | os.PathLike,
    weights_path: str | os.PathLike,
    *,
    name: str | None = None,
    registry: bool = False,
    registry_path: str | os.PathLike | None = None,
    metrics: dict[str, float] | None = None,
) -> Path:
    """Write the generator of ``checkpoint`` (a run's ``last.pt`` or the run folder) to ``weights_path``
    with :func:`napari_refocusgan.core.weights.save_generator`, the training metadata being its model
    card. With ``registry``, add or update its entry (as the default of its role) in the plugin's
    registry (or ``registry_path``) under ``name`` (default: the file's stem), with ``metrics`` (measured
    results) in the entry."""
    out = Path(weights_path)
    _check_output(out, weights_path)
    checkpoint = Path(checkpoint)
    if checkpoint.is_dir():
        checkpoint = checkpoint / CHECKPOINT_NAME
    ckpt = load_checkpoint(checkpoint)
    model = generator_from_checkpoint(ckpt)
    role = ckpt["config"]["task"]
    card = dict(ckpt["metadata"])
    card.update(steps=str(ckpt["step"]), total_steps=str(ckpt["total_steps"]))
    card.setdefault("train_time_s", _training_seconds(checkpoint.parent / LOG_NAME, ckpt["step"]))
    if name:
        card["name"] = name
    _check_registry_use(out, name or out.stem, role, registry, registry_path)
    weights.save_generator(model, out, role, card)
    if registry:
        weights.register_weights(out, name=name or out.stem, role=role, metadata=card, metrics=metrics,
                                 registry=registry_path)  # fmt: skip
    return out
