"""What benchmarks share: process memory readings and the model a benchmark runs."""
from __future__ import annotations

import resource
from pathlib import Path

from lsf_core.models.registry import build_model, load_model, resolve_model_path


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def load_or_build(preset: str):
    """A preset's shipped weights (or a model file); fresh weights when there are none (speed does not
    depend on them). Returns (model, "shipped weights" | "random weights")."""
    try:
        resolve_model_path(preset)
        return load_model(preset), "shipped weights"
    except Exception:  # noqa: BLE001 - speed does not depend on the weights: fall back to fresh ones
        return build_model(Path(preset).stem if preset.endswith(".safetensors") else preset), "random weights"
