"""What every speech-to-face network in lsf_core is: audio + identity in, per-frame motion out.

Conventions shared by all presets:
- audio: float32 mono at 16 kHz, shape (B, S), any length;
- identity: float32 (B, identity_dim): the speaker's neutral-face descriptor (FLAME shape for the
  ``paper`` preset, the avatar's shape coefficients for ``realtime``);
- output: (B, T, C) at ``fps`` (25) with T = num_frames(S) = ceil(S * fps / 16000), the frame grid every
  consumer indexes; ``clip_frames(S)`` <= T of them are computed from the clip (a model whose network yields
  fewer, as the ``paper`` preset's, holds its last frame to fill the grid); channel names in
  ``output_names``; ``output_kind`` is "flame" (50 expression + 3 jaw, unscaled FLAME units) or "arkit"
  (ARKit blendshape weights in 0..1).
"""
from __future__ import annotations

import math

import torch
from torch import nn

AUDIO_RATE = 16000
FPS = 25
SAMPLES_PER_FRAME = AUDIO_RATE // FPS  # 640


def num_frames(num_samples: int, fps: int = FPS, rate: int = AUDIO_RATE) -> int:
    return max(1, math.ceil(num_samples * fps / rate))


def state_mismatch(given: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], limit: int = 8) -> str:
    """"" when ``given`` fills ``expected`` exactly (the same keys and shapes); otherwise what differs, by name:
    "missing [...], unexpected [...], wrong shape ['key (given) vs (expected)', ...]"."""
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    wrong = sorted(f"{k} {tuple(given[k].shape)} vs {tuple(expected[k].shape)}"
                   for k in set(given) & set(expected) if given[k].shape != expected[k].shape)
    if not (missing or unexpected or wrong):
        return ""
    return f"missing {missing[:limit]}, unexpected {unexpected[:limit]}, wrong shape {wrong[:limit]}"


class AnimationModel(nn.Module):
    """Base class: subclasses set the attributes below and implement ``forward``."""

    output_kind: str = "arkit"
    output_names: list[str]
    identity_dim: int
    fps: int = FPS
    min_samples: int = 0   # shortest audio the model accepts (16 kHz samples)

    def forward(self, audio: torch.Tensor, identity: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def clip_frames(self, num_samples: int) -> int:
        """Frames the network computes for a clip of ``num_samples`` (the rest of the grid is held)."""
        return num_frames(num_samples, self.fps)
