"""Streamable log-mel front end shared by the CPU presets.

Mel frame k covers samples ``[k*hop, k*hop + win)`` (no centring, no padding), so a frame depends
only on audio that has already arrived: the streaming engine and the offline path compute the very
same numbers from the same samples.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn


def mel_filterbank(n_mels: int, n_fft: int, rate: int, fmin: float = 40.0, fmax: float | None = None) -> np.ndarray:
    """Slaney-style triangular filters on the HTK mel scale: (n_mels, n_fft // 2 + 1)."""
    fmax = fmax or rate / 2

    def hz_to_mel(f):
        return 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)

    def mel_to_hz(m):
        return 700.0 * (10 ** (np.asarray(m) / 2595.0) - 1.0)

    bins = np.linspace(0, rate / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    fb = np.zeros((n_mels, bins.size), dtype=np.float32)
    for m in range(n_mels):
        lo, mid, hi = edges[m], edges[m + 1], edges[m + 2]
        up = (bins - lo) / max(mid - lo, 1e-6)
        down = (hi - bins) / max(hi - mid, 1e-6)
        fb[m] = np.clip(np.minimum(up, down), 0, None) * (2.0 / (hi - lo))
    return fb


class LogMel(nn.Module):
    """Audio (B, S) -> log-mel frames (B, N, n_mels) for every complete window in S."""

    def __init__(self, n_mels: int = 80, rate: int = 16000, win: int = 400, hop: int = 160, n_fft: int = 512):
        super().__init__()
        self.win, self.hop, self.n_fft = win, hop, n_fft
        self.register_buffer("window", torch.hann_window(win, periodic=True), persistent=False)
        self.register_buffer("fb", torch.from_numpy(mel_filterbank(n_mels, n_fft, rate)), persistent=False)

    def num_frames(self, num_samples: int) -> int:
        return 0 if num_samples < self.win else (num_samples - self.win) // self.hop + 1

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        n = self.num_frames(audio.shape[-1])
        if n == 0:
            return audio.new_zeros(audio.shape[0], 0, self.fb.shape[0])
        frames = audio[:, : (n - 1) * self.hop + self.win].unfold(-1, self.win, self.hop)  # (B, n, win)
        spec = torch.fft.rfft(frames * self.window, n=self.n_fft).abs().pow(2)
        return torch.log(spec @ self.fb.T + 1e-6)


def samples_needed(num_model_frames: int, samples_per_frame: int, win: int, hop: int) -> int:
    """Samples that must exist so that the last mel frame of model frame ``num_model_frames - 1`` is complete."""
    stack = samples_per_frame // hop
    last_mel = num_model_frames * stack - 1
    return last_mel * hop + win


def stacked_frames(mels: torch.Tensor, stack: int) -> torch.Tensor:
    """(B, N*stack, M) -> (B, N, stack*M); trailing incomplete groups are dropped."""
    b, n, m = mels.shape
    n_out = n // stack
    return mels[:, : n_out * stack].reshape(b, n_out, stack * m)


def padded_length(num_samples: int, samples_per_frame: int, win: int, hop: int) -> int:
    t = max(1, math.ceil(num_samples / samples_per_frame))
    return samples_needed(t, samples_per_frame, win, hop)
