"""The HIFB predictor (Hierarchical Interaction Fusion Block) of LSF-Animation, as released.

Two streams, content (audio) and emotion, each 25 fps x ``in_dim`` (1536 = two 768-d 50 Hz frames):
linear projection, element-wise product with the identity style (bias-free linear of the identity
probabilities), squasher (conv + LeakyReLU + InstanceNorm), a linear embedding and sinusoidal
positions shared by both streams. Per layer, the learned fusion tokens are prepended to each stream,
each stream runs its own transformer layer (the tokens' outputs there are dropped), then a fusion
block lets the fusion tokens cross-attend to every (emotion frame, audio frame) pair: keys/values are
the T_e x T_a concatenations [emotion_i, audio_j]. The audio stream after the last layer is the output
(B, T, width): the latent that the motion prior quantises.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lsf_core.models.motion_prior import PreNormLayer, SinusoidalPositions, Squasher, TransformerConfig


@dataclass
class HIFBConfig:
    in_dim: int = 1536
    width: int = 256
    layers: int = 12
    heads: int = 8
    ffn: int = 384
    fusion_tokens: int = 4
    fusion_attn_ratio: float = 0.25  # fusion attention width = width * ratio (64)


class CartesianFusionAttention(nn.Module):
    """Fusion tokens (queries) attend to all (emotion_i, audio_j) pairs; scale = (width / heads) ** -0.5."""

    def __init__(self, width: int, heads: int, ratio: float):
        super().__init__()
        self.heads = heads
        self.scale = (width // heads) ** -0.5
        inner = int(width * ratio)
        self.q = nn.Linear(width, inner, bias=False)
        self.kv = nn.Linear(2 * width, 2 * inner, bias=False)
        self.proj = nn.Linear(inner, width)

    def forward(self, tokens: torch.Tensor, audio: torch.Tensor, emotion: torch.Tensor) -> torch.Tensor:
        b, n, _ = tokens.shape
        ta, te = audio.shape[1], emotion.shape[1]
        pairs = torch.cat([emotion[:, :, None].expand(-1, -1, ta, -1),
                           audio[:, None].expand(-1, te, -1, -1)], dim=3).flatten(1, 2)
        q = self.q(tokens).reshape(b, n, self.heads, -1).transpose(1, 2)
        k, v = self.kv(pairs).reshape(b, te * ta, 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        attn = torch.softmax((q @ k.transpose(-1, -2)) * self.scale, dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, -1))


class FusionBlock(nn.Module):
    def __init__(self, cfg: HIFBConfig):
        super().__init__()
        w = cfg.width
        self.norm_tokens, self.norm_audio, self.norm_emotion = nn.LayerNorm(w), nn.LayerNorm(w), nn.LayerNorm(w)
        self.attn = CartesianFusionAttention(w, cfg.heads, cfg.fusion_attn_ratio)
        self.norm_mlp = nn.LayerNorm(w)
        self.mlp_in = nn.Linear(w, cfg.ffn)
        self.mlp_out = nn.Linear(cfg.ffn, w)

    def forward(self, tokens: torch.Tensor, audio: torch.Tensor, emotion: torch.Tensor) -> torch.Tensor:
        tokens = tokens + self.attn(self.norm_tokens(tokens), self.norm_audio(audio), self.norm_emotion(emotion))
        return tokens + self.mlp_out(F.gelu(self.mlp_in(self.norm_mlp(tokens))))


class HIFBPredictor(nn.Module):
    def __init__(self, cfg: HIFBConfig, identity_classes: int):
        super().__init__()
        w = cfg.width
        layer_cfg = TransformerConfig(width=w, layers=1, heads=cfg.heads, ffn=cfg.ffn)
        self.audio_proj = nn.Linear(cfg.in_dim, w)
        self.emotion_proj = nn.Linear(cfg.in_dim, w)
        self.style_proj = nn.Linear(identity_classes, w, bias=False)
        self.squash_audio = Squasher(w)
        self.squash_emotion = Squasher(w)
        self.embed = nn.Linear(w, w)
        self.positions = SinusoidalPositions(w)
        self.audio_layers = nn.ModuleList(PreNormLayer(layer_cfg) for _ in range(cfg.layers))
        self.emotion_layers = nn.ModuleList(PreNormLayer(layer_cfg) for _ in range(cfg.layers))
        self.fusion_tokens = nn.Parameter(torch.randn(1, cfg.fusion_tokens, w) * 0.02)
        self.fusion_blocks = nn.ModuleList(FusionBlock(cfg) for _ in range(cfg.layers))

    def forward(self, audio: torch.Tensor, emotion: torch.Tensor, identity_probs: torch.Tensor) -> torch.Tensor:
        """audio (B, T, in_dim), emotion (B, T', in_dim), identity_probs (B, N) -> latents (B, T, width)."""
        style = self.style_proj(identity_probs)[:, None]
        xa = self.positions(self.embed(self.squash_audio(self.audio_proj(audio) * style)))
        xe = self.positions(self.embed(self.squash_emotion(self.emotion_proj(emotion) * style)))
        tokens = self.fusion_tokens.expand(audio.shape[0], -1, -1)
        n = tokens.shape[1]
        last = len(self.audio_layers) - 1
        for i, (audio_layer, emotion_layer, fusion) in enumerate(
                zip(self.audio_layers, self.emotion_layers, self.fusion_blocks)):
            xa = audio_layer(torch.cat([tokens, xa], dim=1))[:, n:]
            if i == last:  # the release updates the tokens once more, but nothing reads them after this layer
                break
            xe = emotion_layer(torch.cat([tokens, xe], dim=1))[:, n:]
            tokens = fusion(tokens, xa, xe)
        return xa
