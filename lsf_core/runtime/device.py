"""Where inference runs: the device a request resolves to here, and stream states moved between devices."""
from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)


def pick_device(requested: str) -> str:
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        log.warning("device %r requested but CUDA is not available: using the CPU", requested)
        return "cpu"
    return requested


def to_device(value, device: str):
    """A stream state (nested dicts/lists of tensors) moved to ``device``."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_device(v, device) for v in value)
    return value
