"""Which torch device a run uses: every core function that takes ``device=`` reads it through
:func:`pick_device`, so that 'CPU', 'auto' or an absent CUDA mean the same everywhere."""

from __future__ import annotations

import torch

from .errors import RefocusError


def available_devices() -> list[str]:
    """Devices torch can use here, best first: ``cuda:N``…, ``mps``, ``cpu``."""
    found = [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append("mps")
    return found + ["cpu"]


def pick_device(name: str | torch.device | None = "auto", *, default: str = "auto") -> torch.device:
    """``auto``: CUDA, then Apple MPS, then CPU. Otherwise the named device, which must exist. None means
    ``default`` (the functions whose own default is the CPU keep it for None)."""
    if name is None:
        name = default
    if isinstance(name, torch.device):
        name = str(name)
    if not isinstance(name, str):  # 0 and False were taken as "auto", 1 failed inside
        raise RefocusError(f"device must be a name such as 'cpu', 'cuda:0' or 'auto', or a torch.device; "
                           f"got {name!r}.")  # fmt: skip
    name = (name or "auto").strip().lower()
    available = available_devices()
    if name == "auto":
        return torch.device("cuda" if available[0].startswith("cuda") else available[0])
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as exc:
        raise RefocusError(f"unknown device {name!r}; choose auto or one of: {', '.join(available)}.") from exc
    if device.type == "cuda":
        index = device.index or 0
        if f"cuda:{index}" not in available:
            raise RefocusError(f"device {name!r} is not available here; available: {', '.join(available)}.")
    elif device.type == "mps" and "mps" not in available:
        raise RefocusError(f"device 'mps' is not available here; available: {', '.join(available)}.")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise RefocusError(f"unsupported device {name!r}; choose auto or one of: {', '.join(available)}.")
    return device
