"""emotion2vec base (Ma et al. 2023) as a plain torch module: the frozen emotion encoder of LSF-Animation.

emotion2vec is a data2vec 2.0 audio model. This module is its inference path
(``extract_features(source, mask=False)``) with the parameter names of the fairseq / FunASR
implementation, so the released ``emotion2vec_base.pt`` state dict (and the ``audio_model.*`` part of
an LSF-Animation stage-2 checkpoint) loads by name, without fairseq or FunASR:

- ``modality_encoders.AUDIO.local_encoder``: 7 conv layers (512 channels, kernels/strides
  10/5, 3/2 x 4, 2/2 x 2: 320 samples per 50 Hz frame), each conv (no bias) -> LayerNorm over
  channels -> GELU;
- ``project_features``: LayerNorm(512) -> Linear(512, 768);
- ``relative_positional_encoder``: 5 x [grouped Conv1d(768, k=19, 16 groups) -> LayerNorm without
  affine -> GELU], added to its input;
- ``extra_tokens``: learned tokens put in front of the sequence (10 in emotion2vec base), dropped
  from the output;
- ``context_encoder``: LayerNorm, then 4 post-LN transformer blocks (the "prenet"); then the 8 main
  ``blocks``. Attention carries ALiBi biases (symmetric, -slope * |i - j|, zero for extra tokens),
  scaled by the learned, non-negative ``alibi_scale`` (one per head; per layer too when its first
  dimension is 12 = prenet + main depth).

Output: (B, T50, 768), T50 = frames of the conv stack. The input is the waveform at 16 kHz; emotion2vec
expects it layer-normed over the clip (``F.layer_norm(wav, wav.shape)``), which the caller does.
Dropouts and layer drop are training-time only and absent here: the module is a frozen feature
extractor. Verified against FunASR's implementation (test/test_emotion2vec.py).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lsf_core.config import ConfigError
from lsf_core.models.base import state_mismatch
from lsf_core.safe_pickle import load_error_reason, torch_load_inert

PREFIX = "modality_encoders.AUDIO."

# Keys of a fairseq / FunASR emotion2vec state dict that this inference module has no use for, with why.
FAIRSEQ_IGNORED: list[tuple[str, str]] = [
    (r"modality_encoders\.AUDIO\.decoder\..+", "data2vec pre-training decoder (not used to extract features)"),
    (r"_ema(\..+)?|ema\..+", "data2vec EMA teacher (pre-training only)"),
    (r"proj\.(weight|bias)", "utterance emotion classification head of the fine-tuned variants"),
]


def fairseq_ignored(key: str) -> bool:
    return any(re.fullmatch(pattern, key) for pattern, _ in FAIRSEQ_IGNORED)


@dataclass
class Emotion2VecConfig:
    embed_dim: int = 768
    depth: int = 8  # main transformer blocks
    prenet_depth: int = 4  # context-encoder blocks
    num_heads: int = 12
    mlp_ratio: float = 4.0
    norm_eps: float = 1e-5
    # (channels, kernel, stride) per conv layer of the waveform front end
    conv_layers: list[list[int]] = field(
        default_factory=lambda: [[512, 10, 5]] + [[512, 3, 2]] * 4 + [[512, 2, 2]] * 2)
    conv_pos_width: int = 95
    conv_pos_depth: int = 5
    conv_pos_groups: int = 16
    num_extra_tokens: int = 10
    alibi_scale_per_layer: bool = False  # one learned ALiBi scale per layer (else one shared)

    def from_state(self, state: dict[str, torch.Tensor]) -> dict[str, object]:
        """The config overrides a fairseq state dict fixes (widths, depths, kernels, groups, extra tokens,
        ALiBi scales), on top of this config; conv strides (not in the weights) are kept from it."""
        def count(prefix: str) -> int:
            return len({k[len(prefix):].split(".")[0] for k in state if k.startswith(prefix)})

        out: dict[str, object] = {}
        convs: list[torch.Tensor] = []
        while (k := f"{PREFIX}local_encoder.conv_layers.{len(convs)}.0.weight") in state:
            convs.append(state[k])
        if convs:
            if len(convs) != len(self.conv_layers):
                raise ConfigError(f"emotion2vec state dict: {len(convs)} conv layers, the config has "
                                  f"{len(self.conv_layers)} (their strides are not in the weights: set conv_layers)")
            out["conv_layers"] = [[int(w.shape[0]), int(w.shape[2]), stride]
                                  for w, (_, _, stride) in zip(convs, self.conv_layers)]
        pos = f"{PREFIX}relative_positional_encoder.1.0.weight"
        if pos in state:
            depth = count(f"{PREFIX}relative_positional_encoder.")
            out["conv_pos_depth"] = depth
            out["conv_pos_width"] = int(state[pos].shape[2]) * depth  # any width with this kernel
            out["conv_pos_groups"] = int(state[pos].shape[0] // state[pos].shape[1])
        if f"{PREFIX}project_features.2.weight" in state:
            out["embed_dim"] = state[f"{PREFIX}project_features.2.weight"].shape[0]
        if "blocks.0.mlp.fc1.weight" in state:
            out["depth"] = count("blocks.")
            out["mlp_ratio"] = state["blocks.0.mlp.fc1.weight"].shape[0] / state["blocks.0.mlp.fc1.weight"].shape[1]
        if f"{PREFIX}context_encoder.blocks.0.norm1.weight" in state:
            out["prenet_depth"] = count(f"{PREFIX}context_encoder.blocks.")
        if f"{PREFIX}extra_tokens" in state:
            out["num_extra_tokens"] = state[f"{PREFIX}extra_tokens"].shape[1]
        else:
            out["num_extra_tokens"] = 0
        if f"{PREFIX}alibi_scale" in state:
            scale = state[f"{PREFIX}alibi_scale"]
            scale = scale.unsqueeze(0) if scale.dim() == 4 else scale  # older fairseq layout
            out["alibi_scale_per_layer"] = scale.shape[0] > 1
            if scale.shape[2] > 1:
                out["num_heads"] = scale.shape[2]
        return out


class _ChannelNorm(nn.LayerNorm):
    """LayerNorm over the channels of a (B, C, T) tensor, computed in float32."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x.transpose(1, 2).float(), self.normalized_shape, self.weight, self.bias, self.eps)
        return y.transpose(1, 2).type_as(x)


class _ConvLayer(nn.Module):
    """Conv1d (no bias) -> LayerNorm over channels -> GELU; children named as fairseq's ``0`` and ``2.1``."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int):
        super().__init__()
        self.add_module("0", nn.Conv1d(c_in, c_out, kernel, stride=stride, bias=False))
        self.add_module("2", nn.Sequential(nn.Identity(), _ChannelNorm(c_out)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self._modules["2"][1](self._modules["0"](x)))


class _LocalEncoder(nn.Module):
    def __init__(self, layers: list[list[int]]):
        super().__init__()
        convs, c_in = [], 1
        for c_out, kernel, stride in layers:
            convs.append(_ConvLayer(c_in, c_out, kernel, stride))
            c_in = c_out
        self.conv_layers = nn.ModuleList(convs)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        x = wav.unsqueeze(1)
        for conv in self.conv_layers:
            x = conv(x)
        return x


class _PosConv(nn.Module):
    """Grouped conv -> LayerNorm without affine -> GELU on (B, C, T); the conv is fairseq's child ``0``."""

    def __init__(self, dim: int, kernel: int, groups: int):
        super().__init__()
        self.add_module("0", nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=groups))
        self.trim = 1 if kernel % 2 == 0 else 0  # fairseq SamePad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._modules["0"](x)
        if self.trim:
            x = x[:, :, :-self.trim]
        x = F.layer_norm(x.transpose(1, 2), (x.shape[1],)).transpose(1, 2)
        return F.gelu(x)


class _RelativePositions(nn.Module):
    """Children ``1`` .. ``depth`` (fairseq's Sequential has a transpose at 0 and at depth + 1)."""

    def __init__(self, dim: int, width: int, depth: int, groups: int):
        super().__init__()
        kernel = max(3, width // depth)
        self.depth = depth
        for i in range(depth):
            self.add_module(str(i + 1), _PosConv(dim, kernel, groups))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C) -> (B, T, C)."""
        y = x.transpose(1, 2)
        for i in range(self.depth):
            y = self._modules[str(i + 1)](y)
        return y.transpose(1, 2)


class _Projection(nn.Module):
    """(B, 512, T) -> LayerNorm -> Linear -> (B, T, 768); children ``1`` and ``2`` as in fairseq."""

    def __init__(self, c_in: int, dim: int):
        super().__init__()
        self.add_module("1", nn.LayerNorm(c_in))
        self.add_module("2", nn.Linear(c_in, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._modules["2"](self._modules["1"](x.transpose(1, 2)))


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class _Block(nn.Module):
    """data2vec 2.0 ``AltBlock`` with post-LN (``layer_norm_first: false``)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, eps: float):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=eps), nn.LayerNorm(dim, eps=eps)
        self.attn = _Attention(dim, heads)
        self.mlp = _Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.attn(x, bias))
        return self.norm2(x + self.mlp(x))


class _ContextEncoder(nn.Module):
    def __init__(self, cfg: Emotion2VecConfig):
        super().__init__()
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=cfg.norm_eps)
        self.blocks = nn.ModuleList(_Block(cfg.embed_dim, cfg.num_heads, cfg.mlp_ratio, cfg.norm_eps)
                                    for _ in range(cfg.prenet_depth))


class _AudioEncoder(nn.Module):
    def __init__(self, cfg: Emotion2VecConfig):
        super().__init__()
        self.local_encoder = _LocalEncoder(cfg.conv_layers)
        self.project_features = _Projection(cfg.conv_layers[-1][0], cfg.embed_dim)
        self.relative_positional_encoder = _RelativePositions(cfg.embed_dim, cfg.conv_pos_width, cfg.conv_pos_depth,
                                                              cfg.conv_pos_groups)
        self.context_encoder = _ContextEncoder(cfg)
        layers = cfg.prenet_depth + cfg.depth if cfg.alibi_scale_per_layer else 1
        self.alibi_scale = nn.Parameter(torch.ones(layers, 1, cfg.num_heads, 1, 1))
        self.extra_tokens = nn.Parameter(torch.zeros(1, cfg.num_extra_tokens, cfg.embed_dim)) \
            if cfg.num_extra_tokens else None


def alibi_slopes(heads: int) -> torch.Tensor:
    """ALiBi head slopes (Press et al.): a geometric series; for a head count that is not a power of two,
    the slopes of the next-lower power of two followed by every other slope of twice that."""
    def power_of_2(n: int) -> list[float]:
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start ** i for i in range(n)]

    if math.log2(heads).is_integer():
        return torch.tensor(power_of_2(heads))
    lower = 2 ** math.floor(math.log2(heads))
    return torch.tensor(power_of_2(lower) + alibi_slopes(2 * lower).tolist()[0::2][:heads - lower])


class Emotion2Vec(nn.Module):
    """emotion2vec base: waveform (B, S) at 16 kHz, layer-normed per clip -> features (B, T50, embed_dim)."""

    def __init__(self, cfg: Emotion2VecConfig | None = None):
        super().__init__()
        self.config = cfg = cfg or Emotion2VecConfig()
        if cfg.embed_dim % cfg.num_heads:
            raise ConfigError(f"emotion2vec: embed_dim {cfg.embed_dim} is not a multiple of num_heads {cfg.num_heads}")
        if any(len(layer) != 3 for layer in cfg.conv_layers):
            raise ConfigError(f"emotion2vec.conv_layers: expected [channels, kernel, stride] per layer, "
                              f"got {cfg.conv_layers}")
        self.modality_encoders = nn.ModuleDict({"AUDIO": _AudioEncoder(cfg)})
        self.blocks = nn.ModuleList(_Block(cfg.embed_dim, cfg.num_heads, cfg.mlp_ratio, cfg.norm_eps)
                                    for _ in range(cfg.depth))
        self.register_buffer("slopes", alibi_slopes(cfg.num_heads).view(1, -1, 1, 1), persistent=False)

    def frames(self, samples: int) -> int:
        """50 Hz feature frames for ``samples`` input samples (0 if too short for the conv stack)."""
        n = samples
        for _, kernel, stride in self.config.conv_layers:
            n = (n - kernel) // stride + 1
        return max(n, 0)

    def _alibi(self, t: int, device: torch.device) -> torch.Tensor:
        """(1, H, t + extra, t + extra) unscaled biases: -slope * |i - j|, zero rows/columns for extra tokens."""
        pos = torch.arange(t, device=device)
        bias = -(pos[None, :] - pos[:, None]).abs().float() * self.slopes
        extra = self.config.num_extra_tokens
        return F.pad(bias, (extra, 0, extra, 0)) if extra else bias

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        if wav.dim() != 2:
            raise ValueError(f"emotion2vec: wav must be (B, samples), got shape {tuple(wav.shape)}")
        if self.frames(wav.shape[1]) < 1:
            raise ValueError(f"emotion2vec: {wav.shape[1]} samples give no feature frame "
                             f"(need at least {self.min_samples()})")
        enc = self.modality_encoders["AUDIO"]
        x = enc.project_features(enc.local_encoder(wav))
        x = x + enc.relative_positional_encoder(x)
        base = self._alibi(x.shape[1], x.device)
        scales = enc.alibi_scale.clamp_min(0).float()  # (L or 1, 1, H, 1, 1)
        if enc.extra_tokens is not None:
            x = torch.cat([enc.extra_tokens.expand(x.shape[0], -1, -1), x], dim=1)
        x = enc.context_encoder.norm(x)
        blocks = [*enc.context_encoder.blocks, *self.blocks]
        for i, block in enumerate(blocks):
            x = block(x, base * scales[i if scales.shape[0] > 1 else 0, 0])
        return x[:, self.config.num_extra_tokens:]

    def min_samples(self) -> int:
        """The fewest input samples that give one feature frame."""
        n = 1
        for _, kernel, stride in reversed(self.config.conv_layers):
            n = (n - 1) * stride + kernel
        return n

    def load_fairseq_state(self, state: dict[str, torch.Tensor], where: str = "emotion2vec state dict") -> None:
        """Load a fairseq / FunASR emotion2vec state dict by name. Keys in ``FAIRSEQ_IGNORED`` are dropped;
        any other unexpected key, a missing key or a shape mismatch raises ``ConfigError`` naming them."""
        ours = self.state_dict()
        kept = {k: v for k, v in state.items() if not fairseq_ignored(k)}
        if f"{PREFIX}alibi_scale" in kept and kept[f"{PREFIX}alibi_scale"].dim() == 4:
            kept[f"{PREFIX}alibi_scale"] = kept[f"{PREFIX}alibi_scale"].unsqueeze(0)  # older fairseq layout
        mismatch = state_mismatch(kept, ours)
        if mismatch:
            raise ConfigError(f"{where}: does not fit emotion2vec {self.config} (shapes: file vs ours): {mismatch}")
        self.load_state_dict({k: v.float() for k, v in kept.items()})


def read_fairseq_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The model state dict of the released ``emotion2vec_base.pt`` (a fairseq checkpoint: ``model``, ``cfg``,
    ...) or of a .safetensors file of the same keys. The fairseq file is read with torch's weights-only
    loader; the classes its pickled configs name (OmegaConf, argparse, fairseq dataclasses and enums)
    load as inert objects: nothing is imported or run, and only ``model``'s tensors are used. A file
    naming a function of a module torch blocks (``os.system``, ...) is refused. Errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such emotion2vec checkpoint")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:  # SafetensorError, OSError
            raise ConfigError(f"{path}: unreadable safetensors file: {err}") from err
    try:
        ckpt = torch_load_inert(path, lambda name: True)
    except Exception as err:  # UnpicklingError, RuntimeError/EOFError (not a torch checkpoint)
        raise ConfigError(f"{path}: not a readable torch checkpoint (nothing in it was executed): "
                          f"{load_error_reason(err)}") from err
    state = ckpt.get("model") if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise ConfigError(f"{path}: not a fairseq checkpoint (no 'model' state dict)")
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor) and not fairseq_ignored(k)]
    if bad:
        raise ConfigError(f"{path}: model entries that are not tensors: {bad[:5]}")
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
