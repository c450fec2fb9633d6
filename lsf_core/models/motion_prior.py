"""LSF-Animation's motion prior (stage 1): a transformer VQ-VAE over 53-d scaled FLAME motion at 25 fps.

Also holds the building blocks the HIFB predictor shares with it (pre-norm transformer layers, the
conv "squasher", sinusoidal positions), written to compute exactly what the release computes:

- attention scores are scaled by ``width ** -0.5`` (the full width, 256, not the head width), heads
  are split as ``(qkv, head, dim)`` from one bias-free projection, FFN uses tanh-approximated GELU;
- squasher = Conv1d(k=5, replicate padding) -> LeakyReLU(0.2) -> InstanceNorm1d (no affine), over the
  whole clip;
- the quantiser flattens the (B, C, T) latent in memory order into rows of ``code_dim`` values and
  matches each row to the nearest code (or samples a code with softmax(-distance / temperature)).
  With C=256 and code_dim=128 a row is 128 consecutive *time steps* of one channel, so quantisation
  depends on the clip length: quantise each clip at its own length (LSFPaperModel does).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class TransformerConfig:
    width: int = 256
    layers: int = 6
    heads: int = 8
    ffn: int = 384


@dataclass
class MotionPriorConfig:
    motion_dim: int = 53
    encoder: TransformerConfig = field(default_factory=TransformerConfig)
    decoder: TransformerConfig = field(default_factory=TransformerConfig)
    codebook_size: int = 256
    code_dim: int = 128


class PreNormLayer(nn.Module):
    """x + Attn(LN(x)); x + FFN(LN(x)). Non-causal self-attention over the whole sequence."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        if cfg.width % cfg.heads:
            raise ValueError(f"transformer width {cfg.width} is not divisible by heads {cfg.heads}")
        self.heads = cfg.heads
        self.scale = cfg.width ** -0.5
        self.attn_norm = nn.LayerNorm(cfg.width)
        self.qkv = nn.Linear(cfg.width, 3 * cfg.width, bias=False)
        self.attn_out = nn.Linear(cfg.width, cfg.width)
        self.ffn_norm = nn.LayerNorm(cfg.width)
        self.ffn_in = nn.Linear(cfg.width, cfg.ffn)
        self.ffn_out = nn.Linear(cfg.ffn, cfg.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(self.attn_norm(x)).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attn = torch.softmax((q @ k.transpose(-1, -2)) * self.scale, dim=-1)
        x = x + self.attn_out((attn @ v).transpose(1, 2).reshape(b, n, c))
        return x + self.ffn_out(F.gelu(self.ffn_in(self.ffn_norm(x)), approximate="tanh"))


class TransformerStack(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.layers = nn.ModuleList(PreNormLayer(cfg) for _ in range(cfg.layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class Squasher(nn.Module):
    """Conv1d(k=5, replicate pad) + LeakyReLU(0.2) + InstanceNorm1d over time; (B, T, C) -> (B, T, C)."""

    def __init__(self, width: int):
        super().__init__()
        self.conv = nn.Conv1d(width, width, 5, padding=2, padding_mode="replicate")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.leaky_relu(self.conv(x.transpose(1, 2)), 0.2)
        return F.instance_norm(y).transpose(1, 2)


class SinusoidalPositions(nn.Module):
    """Adds the standard sin/cos table (not stored in the state dict: it is computed), then dropout
    (0.1 in training, as released)."""

    def __init__(self, width: int, max_len: int = 5000, dropout: float = 0.1):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        pos = torch.arange(max_len, dtype=torch.float32)[:, None]
        div = torch.exp(torch.arange(0, width, 2, dtype=torch.float32) * (-math.log(10000.0) / width))
        table = torch.zeros(max_len, width)
        table[:, 0::2] = torch.sin(pos * div)
        table[:, 1::2] = torch.cos(pos * div)
        self.register_buffer("table", table, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] > self.table.shape[0]:
            raise ValueError(f"sequence of {x.shape[1]} frames is longer than the {self.table.shape[0]}-frame "
                             "position table (200 s at 25 fps)")
        return self.dropout(x + self.table[: x.shape[1]])


class MotionEncoder(nn.Module):
    def __init__(self, motion_dim: int, cfg: TransformerConfig):
        super().__init__()
        self.input = nn.Linear(motion_dim, cfg.width)
        self.squash = Squasher(cfg.width)
        self.embed = nn.Linear(cfg.width, cfg.width)
        self.positions = SinusoidalPositions(cfg.width)
        self.transformer = TransformerStack(cfg)

    def forward(self, motion: torch.Tensor) -> torch.Tensor:
        x = self.squash(F.leaky_relu(self.input(motion), 0.2))
        return self.transformer(self.positions(self.embed(x)))


class MotionDecoder(nn.Module):
    def __init__(self, motion_dim: int, cfg: TransformerConfig):
        super().__init__()
        self.squash = Squasher(cfg.width)
        self.embed = nn.Linear(cfg.width, cfg.width)
        self.positions = SinusoidalPositions(cfg.width)
        self.transformer = TransformerStack(cfg)
        self.output = nn.Linear(cfg.width, motion_dim, bias=False)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        x = self.positions(self.embed(self.squash(latents)))
        return self.output(self.transformer(x))


class VectorQuantizer(nn.Module):
    """Codebook lookup with the release's channel-major flattening (see the module docstring)."""

    def __init__(self, codebook_size: int, code_dim: int, beta: float = 0.25):
        super().__init__()
        self.code_dim = code_dim
        self.beta = beta
        self.codebook = nn.Embedding(codebook_size, code_dim)
        nn.init.uniform_(self.codebook.weight, -1.0 / codebook_size, 1.0 / codebook_size)

    def forward(self, latents: torch.Tensor, sample: bool = False, temperature: float = 0.2,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """latents (B, T, C) -> (quantised (B, T, C), indices (B, C*T/code_dim), vq loss)."""
        b, t, c = latents.shape
        if (c * t) % self.code_dim:
            raise ValueError(f"latent width {c} x {t} frames is not a multiple of the code size {self.code_dim}")
        rows = latents.transpose(1, 2).reshape(-1, self.code_dim)
        codes = self.codebook.weight
        dist = rows.pow(2).sum(1, keepdim=True) + codes.pow(2).sum(1) - 2 * rows @ codes.t()
        if sample:
            if temperature <= 0:
                raise ValueError(f"temperature must be > 0, got {temperature}")
            idx = torch.multinomial(torch.softmax(-dist / temperature, dim=-1), 1, generator=generator)[:, 0]
        else:
            idx = dist.argmin(dim=1)
        quant = codes[idx]
        loss = self.beta * (quant.detach() - rows).pow(2).mean() + (quant - rows.detach()).pow(2).mean()
        quant = rows + (quant - rows).detach()
        return quant.reshape(b, c, t).transpose(1, 2), idx.reshape(b, -1), loss


class MotionPrior(nn.Module):
    def __init__(self, cfg: MotionPriorConfig):
        super().__init__()
        self.encoder = MotionEncoder(cfg.motion_dim, cfg.encoder)
        self.decoder = MotionDecoder(cfg.motion_dim, cfg.decoder)
        self.quantizer = VectorQuantizer(cfg.codebook_size, cfg.code_dim)

    def encode(self, motion_scaled: torch.Tensor) -> torch.Tensor:
        return self.encoder(motion_scaled)

    def quantize(self, latents: torch.Tensor, sample: bool = False, temperature: float = 0.2,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.quantizer(latents, sample=sample, temperature=temperature, generator=generator)

    def decode(self, quantised: torch.Tensor) -> torch.Tensor:
        return self.decoder(quantised)

    def forward(self, motion_scaled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstruct scaled motion (B, T, 53); returns (reconstruction, vq loss)."""
        quant, _, loss = self.quantize(self.encode(motion_scaled))
        return self.decode(quant), loss
