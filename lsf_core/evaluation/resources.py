"""What benchmarks share: process memory readings and the model a benchmark runs."""
from __future__ import annotations

import resource

from lsf_core.models.registry import ARCHS, WEIGHTS_DIR, build_model, load_model


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def load_or_build(preset: str):
    """A preset's shipped weights or a model file. A preset that ships no weights (``paper``: the authors'
    weights cannot be downloaded) runs on fresh ones, since speed does not depend on them. A file that is
    given or shipped but cannot be read is an error naming it, never random weights.
    Returns (model, "shipped weights" | "model file" | "random weights")."""
    if preset in ARCHS and not (WEIGHTS_DIR / f"{preset}.safetensors").is_file():
        return build_model(preset), "random weights"
    return load_model(preset), "shipped weights" if preset in ARCHS else "model file"
