"""LSF-Animation as released (Lu et al., SIGGRAPH Asia 2025): speech -> FLAME expression 50 + jaw 3 at 25 fps.

Pipeline per clip (the release runs one clip at a time; so does this model, looping over the batch,
because InstanceNorm, attention, waveform normalisation and quantisation all span the whole clip):

1. the waveform is min-max scaled to [-1, 1] (sklearn ``minmax_scale``, as the release's data loader and
   generation script do); content: then normalised to zero mean, unit variance (eps 1e-5, the release's
   Wav2Vec2 processor under its pinned transformers 4.10) and run through HuBERT base -> (T50, 768);
   emotion: the scaled waveform is layer-normed over the clip and run through the frozen emotion encoder
   (emotion2vec base as released, lsf_core/models/emotion2vec.py; ``emotion.kind: hubert`` puts a frozen
   HuBERT base in its place) -> (T50', 768);
2. each is pair-concatenated to 25 fps x 1536 (an odd last 50 Hz frame is dropped, as released): the
   clip has Tr = floor(T50 / 2) frames (``clip_frames``), usually 1-2 fewer than num_frames(S) = ceil(S / 640);
3. identity: FLAME shape (300) -> MLP 300-256-ReLU-128-ReLU-N -> softmax (N training identities);
   ``identity=None`` means the mean (all-zero) shape;
4. HIFB predictor (lsf_core/models/hifb.py) -> latents (Tr, 256);
5. motion prior (lsf_core/models/motion_prior.py): quantise with the 256 x 128 codebook and decode to
   scaled motion (Tr, 53); ``unscale`` maps it back to FLAME units with the min-max buffers;
6. only then, for the shared frame grid (``AnimationModel``: T = num_frames(S), what the streaming engine
   indexes), the last frame is held for the 1-2 frames past Tr. The network never sees padding: padding its
   input would change every frame (per-clip InstanceNorm, attention over the clip, 128-frame code rows).

Codes: ``config.codes = "nearest"`` (our default; deterministic, the release's ``sample=False`` path) or
``"sample"``: one draw per position from softmax(-distance / ``config.temperature``) (the release's generation
default, temperature 0.2, ``torch.multinomial``), from a generator seeded with ``config.seed`` for each clip,
so a run repeats. ``sample`` draws n motions per clip the same way.

API (what training, benchmarking and inference code use):
- ``forward(audio (B,S), identity (B,300) | None, lengths (B,) | None) -> (B, T, 53)`` unscaled;
  ``clip_frames(samples)`` of them are the network's, the rest of each clip holds its last frame;
- ``sample(audio, identity, n, temperature=config, lengths=None, generator=None) -> (n, B, T, 53)``;
- ``set_sampling(temperature, seed)``: switch ``forward`` to sampled codes (None: nearest code);
- ``predict_latents(audio, identity, lengths=None) -> (B, T, 256)`` (held as the output; zeros past each
  clip's frames);
- ``prior.encode(scaled (B,T,53)) -> (B,T,256)``; ``prior.quantize(latents, sample, temperature) ->
  (quantised (B,T,256), indices (B, 2T), vq_loss)``; ``prior.decode(quantised) -> scaled (B,T,53)``.
  Latents are 256 wide (the codebook's 128-d codes are matched to 128-value rows of the flattened
  (256, T) latent, see motion_prior.py): quantise each clip at its own length.
- ``scale(params53)`` / ``unscale(scaled53)``: per channel ``(x - lo) / (hi - lo)`` (sklearn MinMaxScaler
  to [0, 1]), ``lo``/``hi`` in the buffers ``scale_lo``/``scale_hi``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lsf_core.config import ConfigError, from_dict
from lsf_core.models.base import AnimationModel, num_frames
from lsf_core.models.hifb import HIFBConfig, HIFBPredictor
from lsf_core.models.motion_prior import MotionPrior, MotionPriorConfig

# 0.085 s: the shortest clip that gives two 25 fps frames (T50 = 4): InstanceNorm over the clip needs more than
# one frame (the release fails on one too)
MIN_SAMPLES = 1360
# zero-mean unit-variance eps of the release's Wav2Vec2 processor (transformers 4.10, its pin; later versions: 1e-7)
HUBERT_NORM_EPS = 1e-5
CODES = ("nearest", "sample")

_SMALL_HUBERT = {"hidden_size": 64, "num_hidden_layers": 3, "num_attention_heads": 4, "intermediate_size": 128,
                 "conv_dim": [32] * 7, "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 4}
_SMALL_STACK = {"width": 64, "layers": 1, "heads": 4, "ffn": 96}
# emotion2vec at test size (FunASR-comparable: see test/test_emotion2vec.py)
SMALL_EMOTION2VEC = {"embed_dim": 64, "depth": 2, "prenet_depth": 1, "num_heads": 4, "num_extra_tokens": 2,
                     "conv_layers": [[32, 10, 5]] + [[32, 3, 2]] * 4 + [[32, 2, 2]] * 2,
                     "conv_pos_width": 16, "conv_pos_depth": 2, "conv_pos_groups": 4}
# A reduced-size ``paper`` config (same module and key names, ~1/50 of the compute) for tests and smoke runs:
# build_model("paper", SMALL_OVERRIDES).
SMALL_OVERRIDES: dict[str, Any] = {
    "content": {"hubert": _SMALL_HUBERT},
    "emotion": {"kind": "emotion2vec", "emotion2vec": SMALL_EMOTION2VEC},
    "identity": {"classes": 8},
    "predictor": {"in_dim": 128, "width": 64, "layers": 2, "heads": 4, "ffn": 96},
    "prior": {"encoder": _SMALL_STACK, "decoder": _SMALL_STACK, "codebook_size": 16, "code_dim": 32},
}


@dataclass
class ContentEncoderConfig:
    pretrained_dir: str = ""  # local HF-format hubert-base directory; "" = HubertConfig(**hubert), random weights
    hubert: dict[str, Any] = field(default_factory=dict)  # HubertConfig overrides (filled from pretrained_dir)
    frozen_layers: list[int] = field(default_factory=lambda: [0, 1])
    normalize: bool = True  # zero-mean unit-variance waveform (eps 1e-5), as the release's Wav2Vec2 processor


@dataclass
class EmotionEncoderConfig:
    # "emotion2vec" (the release's encoder, lsf_core/models/emotion2vec.py) or "hubert" (a frozen HuBERT base)
    kind: str = "emotion2vec"
    # kind emotion2vec: the released emotion2vec_base.pt (fairseq) or a .safetensors of its keys; "" = random
    pretrained: str = ""
    emotion2vec: dict[str, Any] = field(default_factory=dict)  # Emotion2VecConfig overrides (filled from pretrained)
    hubert: dict[str, Any] = field(default_factory=dict)  # HubertConfig overrides for kind "hubert"


@dataclass
class IdentityConfig:
    shape_dim: int = 300
    hidden: list[int] = field(default_factory=lambda: [256, 128])
    classes: int = 32


@dataclass
class LSFPaperConfig:
    arch: str = "paper"
    content: ContentEncoderConfig = field(default_factory=ContentEncoderConfig)
    emotion: EmotionEncoderConfig = field(default_factory=EmotionEncoderConfig)
    identity: IdentityConfig = field(default_factory=IdentityConfig)
    predictor: HIFBConfig = field(default_factory=HIFBConfig)
    prior: MotionPriorConfig = field(default_factory=MotionPriorConfig)
    expression_range: list[float] = field(default_factory=lambda: [-3.0, 3.0])  # default min-max scaler
    jaw_range: list[float] = field(default_factory=lambda: [-0.1, 0.5])
    waveform_minmax: bool = True  # scale each clip's waveform to [-1, 1] before both encoders, as released
    codes: str = "nearest"  # forward's codes: "nearest" (deterministic) or "sample" (the release's default)
    temperature: float = 0.2  # sampling temperature (codes "sample" and ``sample``), the release's
    seed: int = 0  # codes "sample": each clip's draws come from a generator seeded with this


def _hubert(overrides: dict[str, Any], where: str):
    from transformers import HubertConfig, HubertModel

    try:
        return HubertModel(HubertConfig(**overrides))
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: bad HubertConfig overrides {overrides}: {err}") from err


def pair_frames(feats: torch.Tensor) -> torch.Tensor:
    """(1, T50, C) at 50 Hz -> (1, floor(T50 / 2), 2C) at 25 fps: drop an odd last frame, concatenate pairs
    (no padding, as released)."""
    t50 = feats.shape[1] - feats.shape[1] % 2
    if t50 == 0:
        raise ValueError("audio too short: no pair of 50 Hz feature frames")
    return feats[:, :t50].reshape(feats.shape[0], t50 // 2, 2 * feats.shape[2])


def minmax_waveform(wav: torch.Tensor) -> torch.Tensor:
    """(1, S) -> the clip scaled to [-1, 1] as sklearn's ``minmax_scale(x, (-1, 1))`` does (the release's
    ``audio_normalize``): x * s + (-1 - min * s) with s = 2 / (max - min); a range under 10 eps counts as 1
    (sklearn's near-constant guard), so silence becomes -1 (and zero after either encoder's normalisation)."""
    lo, span = wav.min(), wav.max() - wav.min()
    scale = 2.0 / torch.where(span < 10 * torch.finfo(wav.dtype).eps, torch.ones_like(span), span)
    return wav * scale + (-1.0 - lo * scale)


def hold_frames(x: torch.Tensor, frames: int) -> torch.Tensor:
    """(..., T, C) -> (..., frames, C): the last frame repeated (or frames trimmed) to ``frames``."""
    if x.shape[-2] >= frames:
        return x[..., :frames, :]
    return torch.cat([x, x[..., -1:, :].expand(*x.shape[:-2], frames - x.shape[-2], x.shape[-1])], dim=-2)


class ContentEncoder(nn.Module):
    """HuBERT (transformers ``HubertModel``), CNN front end + feature projection + early layers frozen."""

    def __init__(self, cfg: ContentEncoderConfig):
        super().__init__()
        from transformers import HubertModel

        if cfg.pretrained_dir:
            path = Path(cfg.pretrained_dir)
            if not (path / "config.json").is_file():
                raise ConfigError(f"content.pretrained_dir: {path} is not a HF-format HuBERT directory "
                                  "(no config.json)")
            self.hubert = HubertModel.from_pretrained(str(path), local_files_only=True)
            # the weights now live in this model: later builds (load_model) need only the architecture
            cfg.hubert = self.hubert.config.to_diff_dict()
            cfg.pretrained_dir = ""
        else:
            self.hubert = _hubert(cfg.hubert, "content.hubert")
        self.normalize = cfg.normalize
        self.dim = self.hubert.config.hidden_size
        self.conv = list(zip(self.hubert.config.conv_kernel, self.hubert.config.conv_stride))
        frozen = [self.hubert.feature_extractor, self.hubert.feature_projection]
        frozen += [self.hubert.encoder.layers[i] for i in cfg.frozen_layers]
        for module in frozen:
            for p in module.parameters():
                p.requires_grad = False

    def frames(self, num_samples: int) -> int:
        """50 Hz frames of a clip: the CNN front end's output length."""
        for kernel, stride in self.conv:
            num_samples = max(0, (num_samples - kernel) // stride + 1)
        return num_samples

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """wav (1, S) 16 kHz -> (1, T50, hidden)."""
        if self.normalize:
            wav = (wav - wav.mean()) / torch.sqrt(wav.var(unbiased=False) + HUBERT_NORM_EPS)
        return self.hubert(wav).last_hidden_state


class EmotionEncoder(nn.Module):
    """Frozen emotion feature extractor on the clip-layer-normed waveform; always in eval mode."""

    def __init__(self, cfg: EmotionEncoderConfig):
        super().__init__()
        self.kind = cfg.kind
        if cfg.kind == "emotion2vec":
            from lsf_core.models.emotion2vec import Emotion2Vec, Emotion2VecConfig, read_fairseq_checkpoint

            e2v_cfg = from_dict(Emotion2VecConfig, cfg.emotion2vec, where="emotion.emotion2vec")
            state = read_fairseq_checkpoint(cfg.pretrained) if cfg.pretrained else None
            if state is not None:
                cfg.emotion2vec = {**cfg.emotion2vec, **e2v_cfg.from_state(state)}
                e2v_cfg = from_dict(Emotion2VecConfig, cfg.emotion2vec, where="emotion.emotion2vec")
            self.net = Emotion2Vec(e2v_cfg)
            if state is not None:
                self.net.load_fairseq_state(state, where=f"emotion.pretrained {cfg.pretrained}")
                cfg.pretrained = ""  # the weights now live in this model: later builds need only the sizes
            self.dim = e2v_cfg.embed_dim
        elif cfg.kind == "hubert":
            self.net = _hubert(cfg.hubert, "emotion.hubert")
            self.dim = self.net.config.hidden_size
        else:
            raise ConfigError(f"emotion.kind: unknown emotion encoder {cfg.kind!r}; choose emotion2vec or hubert")
        for p in self.net.parameters():
            p.requires_grad = False
        self.net.eval()

    def train(self, mode: bool = True) -> EmotionEncoder:
        super().train(mode)
        self.net.eval()
        return self

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """wav (1, S) -> (1, T50, dim)."""
        wav = F.layer_norm(wav, wav.shape[1:])
        with torch.no_grad():
            out = self.net(wav)
        return out.last_hidden_state if self.kind == "hubert" else out


class IdentityEncoder(nn.Module):
    """FLAME shape -> probabilities over the training identities."""

    def __init__(self, cfg: IdentityConfig):
        super().__init__()
        dims = [cfg.shape_dim, *cfg.hidden]
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        layers += [nn.Linear(dims[-1], cfg.classes), nn.Softmax(dim=-1)]
        self.mlp = nn.Sequential(*layers)

    def forward(self, shape: torch.Tensor) -> torch.Tensor:
        return self.mlp(shape)


class LSFPaperModel(AnimationModel):
    config_class = LSFPaperConfig
    output_kind = "flame"
    output_names = [f"exp{i}" for i in range(50)] + ["jaw0", "jaw1", "jaw2"]
    identity_dim = 300
    min_samples = MIN_SAMPLES

    def __init__(self, cfg: LSFPaperConfig | None = None):
        super().__init__()
        self.config = cfg = cfg or LSFPaperConfig()
        if cfg.prior.motion_dim != len(self.output_names):
            raise ConfigError(f"prior.motion_dim must be {len(self.output_names)} (50 expression + 3 jaw), "
                              f"got {cfg.prior.motion_dim}")
        if cfg.identity.shape_dim != self.identity_dim:
            raise ConfigError(f"identity.shape_dim must be {self.identity_dim}, got {cfg.identity.shape_dim}")
        self.set_sampling(cfg.temperature if cfg.codes == "sample" else None, cfg.seed, cfg.codes)
        self.content_encoder = ContentEncoder(cfg.content)
        self.emotion_encoder = EmotionEncoder(cfg.emotion)
        for name, dim in (("content", self.content_encoder.dim), ("emotion", self.emotion_encoder.dim)):
            if 2 * dim != cfg.predictor.in_dim:
                raise ConfigError(f"predictor.in_dim ({cfg.predictor.in_dim}) must be twice the {name} encoder "
                                  f"width ({dim})")
        if cfg.predictor.width != cfg.prior.decoder.width:
            raise ConfigError(f"predictor.width ({cfg.predictor.width}) must equal prior.decoder.width "
                              f"({cfg.prior.decoder.width})")
        self.identity = IdentityEncoder(cfg.identity)
        self.predictor = HIFBPredictor(cfg.predictor, cfg.identity.classes)
        self.prior = MotionPrior(cfg.prior)
        lo = [cfg.expression_range[0]] * 50 + [cfg.jaw_range[0]] * 3
        hi = [cfg.expression_range[1]] * 50 + [cfg.jaw_range[1]] * 3
        self.register_buffer("scale_lo", torch.tensor(lo, dtype=torch.float32))
        self.register_buffer("scale_hi", torch.tensor(hi, dtype=torch.float32))

    def set_sampling(self, temperature: float | None, seed: int | None = None, codes: str | None = None) -> None:
        """``forward``'s codes: sampled at ``temperature`` from a generator seeded with ``seed`` for each clip
        (the release's generation), or the nearest code when ``temperature`` is None (our default)."""
        codes = codes or ("nearest" if temperature is None else "sample")
        if codes not in CODES:
            raise ConfigError(f"codes must be one of {', '.join(CODES)}, got {codes!r}")
        if codes == "sample" and not (temperature is not None and temperature > 0):
            raise ConfigError(f"the sampling temperature must be > 0, got {temperature}")
        self.config.codes = codes
        if temperature is not None:
            self.config.temperature = float(temperature)
        if seed is not None:
            self.config.seed = int(seed)

    def clip_frames(self, num_samples: int) -> int:
        """Frames the network computes for a clip (the release's floor(T50 / 2)); ``forward`` holds the last one
        up to num_frames(num_samples)."""
        return self.content_encoder.frames(num_samples) // 2

    # --- scaling ---------------------------------------------------------------------------
    def scale(self, params53: torch.Tensor) -> torch.Tensor:
        return (params53 - self.scale_lo) / (self.scale_hi - self.scale_lo)

    def unscale(self, scaled53: torch.Tensor) -> torch.Tensor:
        return scaled53 * (self.scale_hi - self.scale_lo) + self.scale_lo

    # --- per-clip pipeline ------------------------------------------------------------------
    def _clips(self, audio: torch.Tensor, identity: torch.Tensor | None, lengths: torch.Tensor | None):
        if audio.dim() != 2:
            raise ValueError(f"audio must be (B, S) float 16 kHz, got shape {tuple(audio.shape)}")
        b, s = audio.shape
        if identity is None:
            identity = audio.new_zeros(b, self.identity_dim)
        if identity.shape != (b, self.identity_dim):
            raise ValueError(f"identity must be (B={b}, {self.identity_dim}) FLAME shape, got {tuple(identity.shape)}")
        lens = [s] * b if lengths is None else [int(n) for n in lengths]
        if len(lens) != b or any(n > s for n in lens):
            raise ValueError(f"lengths {lens} must give one length <= {s} per batch item")
        for i, n in enumerate(lens):
            if n < MIN_SAMPLES:
                raise ValueError(f"audio item {i} has {n} samples; the paper model needs at least {MIN_SAMPLES} "
                                 f"({MIN_SAMPLES / 16000:.2f} s)")
        probs = self.identity(identity)
        return [(audio[i:i + 1, :n], probs[i:i + 1], num_frames(n)) for i, n in enumerate(lens)], num_frames(s)

    def _clip_latents(self, wav: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        """One clip (1, S) -> latents (1, clip_frames(S), width), on the release's frames: nothing padded."""
        if self.config.waveform_minmax:
            wav = minmax_waveform(wav)
        content = pair_frames(self.content_encoder(wav))
        emotion = pair_frames(self.emotion_encoder(wav))
        return self.predictor(content, emotion, probs)

    @staticmethod
    def _pad(items: list[torch.Tensor], frames: int) -> torch.Tensor:
        return torch.cat([F.pad(x, (0, 0, 0, frames - x.shape[-2])) for x in items], dim=-3)

    def predict_latents(self, audio: torch.Tensor, identity: torch.Tensor | None = None,
                        lengths: torch.Tensor | None = None) -> torch.Tensor:
        clips, frames = self._clips(audio, identity, lengths)
        return self._pad([hold_frames(self._clip_latents(wav, probs), t) for wav, probs, t in clips], frames)

    def _generate(self, audio, identity, lengths, draws: int, sample: bool, temperature: float,
                  generator: torch.Generator | None) -> torch.Tensor:
        clips, frames = self._clips(audio, identity, lengths)
        out = []
        for wav, probs, t in clips:
            latents = self._clip_latents(wav, probs)
            gen = generator
            if sample and gen is None:  # seeded per clip: a clip's draws do not depend on the rest of the batch
                gen = torch.Generator(device=latents.device).manual_seed(self.config.seed)
            motion = [self.prior.decode(self.prior.quantize(latents, sample, temperature, gen)[0])
                      for _ in range(draws)]
            out.append(hold_frames(self.unscale(torch.stack(motion)), t))  # (draws, 1, t, 53)
        return self._pad(out, frames)

    def forward(self, audio: torch.Tensor, identity: torch.Tensor | None = None,
                lengths: torch.Tensor | None = None) -> torch.Tensor:
        sample = self.config.codes == "sample"
        return self._generate(audio, identity, lengths, 1, sample, self.config.temperature, None)[0]

    def sample(self, audio: torch.Tensor, identity: torch.Tensor | None, n: int, temperature: float | None = None,
               lengths: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        if n < 1:
            raise ValueError(f"n (number of samples) must be >= 1, got {n}")
        temp = self.config.temperature if temperature is None else temperature
        return self._generate(audio, identity, lengths, n, True, temp, generator)
