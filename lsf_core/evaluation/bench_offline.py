"""Offline (whole-clip) benchmark of a model: forward latency for 1, 4 and 10 s clips, peak memory and
parameter counts, on CPU or GPU. Used by ``lsf bench --preset paper --json F``."""
from __future__ import annotations

import time

import numpy as np
import torch
from tqdm import tqdm

from lsf_core.evaluation.resources import peak_rss_mb
from lsf_core.models.base import AUDIO_RATE


def parameter_counts(model: torch.nn.Module) -> dict[str, int]:
    """Total, trainable, and per top-level part (content_encoder, predictor, prior, ...)."""
    counts = {"total": sum(p.numel() for p in model.parameters()),
              "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad)}
    counts.update({name: sum(p.numel() for p in part.parameters()) for name, part in model.named_children()})
    return counts


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bench_offline(model: torch.nn.Module, device: str = "cpu", seconds: tuple[float, ...] = (1.0, 4.0, 10.0),
                  runs: int = 5, warmup: int = 1, seed: int = 0) -> dict:
    """Median forward latency per clip length (after ``warmup`` runs), real-time factor, peak memory
    (RSS on CPU; ``torch.cuda.max_memory_allocated`` on GPU) and parameter counts."""
    if runs < 1 or warmup < 0:
        raise ValueError(f"runs must be >= 1 and warmup >= 0, got runs={runs} warmup={warmup}")
    model = model.to(device).eval()
    rng = np.random.default_rng(seed)
    identity = torch.zeros(1, model.identity_dim, device=device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    latency: dict[str, dict[str, float]] = {}
    bar = tqdm(total=len(seconds) * (runs + warmup), desc="offline bench", leave=False)
    with torch.inference_mode():
        for sec in seconds:
            n = int(sec * AUDIO_RATE)
            t = np.arange(n) / AUDIO_RATE
            wav = 0.1 * np.sin(2 * np.pi * 150 * t) * (np.sin(2 * np.pi * 3 * t) > 0) + 0.01 * rng.standard_normal(n)
            audio = torch.from_numpy(wav.astype(np.float32))[None].to(device)
            times = []
            for i in range(warmup + runs):
                _sync(device)
                t0 = time.perf_counter()
                model(audio, identity)
                _sync(device)
                if i >= warmup:
                    times.append(time.perf_counter() - t0)
                bar.update()
            med = float(np.median(times))
            latency[f"{sec:g}s"] = {"median_ms": 1000 * med, "min_ms": 1000 * min(times), "rtf": med / sec}
    bar.close()
    memory = {"peak_rss_mb": peak_rss_mb()}
    if device.startswith("cuda"):
        memory["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
    return {"device": device, "threads": torch.get_num_threads(), "runs": runs, "warmup": warmup,
            "latency": latency, "memory": memory, "parameters": parameter_counts(model),
            "note": "speed of the full architecture; weights are random unless 'weights' says shipped "
                    "(no paper weights are shipped: the release's checkpoints cannot be downloaded here)"}
