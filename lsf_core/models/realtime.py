"""``realtime``: LSF-Animation rebuilt to stream on a CPU.

It keeps the LSF design: a content stream and an implicit emotion stream taken from the same speech,
identity from the neutral face (identity vector -> MLP -> softmax over pseudo-identities -> a style
vector multiplied into both streams), and per-layer fusion tokens that read the emotion x audio
Cartesian product (Hierarchical Interaction Fusion). What changes, so that one hop costs O(hop):

- front end: a streamable log-mel (no centring) instead of HuBERT / emotion2vec; the emotion stream
  sees the same spectra normalised by causal running statistics over the last few seconds
  (prosody relative to the speaker), instead of per-utterance layer norm;
- the input convolution sees ``lookahead`` future frames; every later layer is strictly causal, so
  the algorithmic latency is ``lookahead + hop``;
- self-attention is limited to the last ``context`` frames with a learned relative-position bias
  (no absolute positions), with key/value caches;
- fusion tokens are per frame: frame t's tokens attend to all (emotion_i, audio_j) pairs inside the
  window. Pair keys and values are additive in the two members, so the T^2 pair softmax factorises
  exactly into one softmax over emotion frames times one over audio frames: the same numbers as the
  explicit Cartesian product, at O(T) cost;
- LayerNorm per frame replaces InstanceNorm over the clip.

The offline ``forward`` runs the very same chunked code from an empty state, so streaming and offline
outputs agree to float rounding.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from lsf_core.arkit import ARKIT_NAMES
from lsf_core.models.base import AUDIO_RATE, FPS, SAMPLES_PER_FRAME, AnimationModel, num_frames
from lsf_core.models.features import LogMel


@dataclass
class RealtimeConfig:
    arch: str = "realtime"
    n_mels: int = 80
    mel_win: int = 400
    mel_hop: int = 160
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    ffn_dim: int = 256
    context: int = 50            # frames of self-attention / fusion window (2 s at 25 fps)
    lookahead: int = 2           # model frames of future audio seen by the input convolution
    conv_past: int = 2           # model frames of past audio seen by the input convolution
    n_fusion_tokens: int = 4
    norm_window: int = 100       # frames of causal running statistics for the emotion stream
    identity_dim: int = 16
    n_identities: int = 16       # pseudo-identities of the identity softmax
    dropout: float = 0.1
    output_kind: str = "arkit"
    output_names: list[str] = field(default_factory=lambda: list(ARKIT_NAMES))


class _WindowAttention(nn.Module):
    """Multi-head attention of each query frame over the last ``context`` key frames plus that
    frame's own fusion tokens, with a learned relative-position bias."""

    def __init__(self, d: int, heads: int, context: int, dropout: float):
        super().__init__()
        self.h, self.dh, self.context = heads, d // heads, context
        self.qkv = nn.Linear(d, 3 * d)
        self.fkv = nn.Linear(d, 2 * d)
        self.out = nn.Linear(d, d)
        self.rel_bias = nn.Parameter(torch.zeros(heads, context))
        self.drop = nn.Dropout(dropout)

    def forward(self, x, tokens, cache_k, cache_v, mask):
        b, length, d = x.shape
        q, k, v = self.qkv(x).view(b, length, 3, self.h, self.dh).permute(2, 0, 3, 1, 4)
        keys, vals = torch.cat([cache_k, k], 2), torch.cat([cache_v, v], 2)
        nf = tokens.shape[2]
        fk, fv = self.fkv(tokens).view(b, length, nf, 2, self.h, self.dh).permute(3, 0, 4, 1, 2, 5)
        scale = 1.0 / math.sqrt(self.dh)
        s_win = (q @ keys.transpose(-1, -2)) * scale + mask.bias(self.rel_bias)
        s_tok = torch.einsum("bhld,bhlfd->bhlf", q, fk) * scale
        p = self.drop(torch.softmax(torch.cat([s_win, s_tok], -1), -1))
        nk = keys.shape[2]
        o = p[..., :nk] @ vals + torch.einsum("bhlf,bhlfd->bhld", p[..., nk:], fv)
        o = o.transpose(1, 2).reshape(b, length, d)
        keep = self.context - 1
        return self.out(o), keys[:, :, -keep:], vals[:, :, -keep:]


class _CartesianFusion(nn.Module):
    """Fusion tokens attend to every (emotion_i, audio_j) pair of the window; pair key/value =
    key/value of emotion_i + key/value of audio_j, computed in factorised form."""

    def __init__(self, d: int, heads: int, context: int, dropout: float):
        super().__init__()
        self.h, self.dh, self.context = heads, d // heads, context
        self.q = nn.Linear(d, d)
        self.kv_e = nn.Linear(d, 2 * d)
        self.kv_a = nn.Linear(d, 2 * d, bias=False)
        self.out = nn.Linear(d, d)
        self.rel_bias_e = nn.Parameter(torch.zeros(heads, context))
        self.rel_bias_a = nn.Parameter(torch.zeros(heads, context))
        self.drop = nn.Dropout(dropout)

    def _kv(self, proj, x, cache):
        b, length, _ = x.shape
        k, v = proj(x).view(b, length, 2, self.h, self.dh).permute(2, 0, 3, 1, 4)
        return torch.cat([cache[0], k], 2), torch.cat([cache[1], v], 2)

    def forward(self, tokens, e, a, cache_e, cache_a, mask):
        b, length, nf, d = tokens.shape
        q = self.q(tokens).view(b, length, nf, self.h, self.dh).permute(0, 3, 1, 2, 4)  # b h l f d
        ke, ve = self._kv(self.kv_e, e, cache_e)
        ka, va = self._kv(self.kv_a, a, cache_a)
        scale = 1.0 / math.sqrt(self.dh)
        bias_e = mask.bias(self.rel_bias_e).unsqueeze(2)
        bias_a = mask.bias(self.rel_bias_a).unsqueeze(2)
        pe = self.drop(torch.softmax(torch.einsum("bhlfd,bhkd->bhlfk", q, ke) * scale + bias_e, -1))
        pa = self.drop(torch.softmax(torch.einsum("bhlfd,bhkd->bhlfk", q, ka) * scale + bias_a, -1))
        o = torch.einsum("bhlfk,bhkd->bhlfd", pe, ve) + torch.einsum("bhlfk,bhkd->bhlfd", pa, va)
        o = o.permute(0, 2, 3, 1, 4).reshape(b, length, nf, d)
        keep = self.context - 1
        return self.out(o), (ke[:, :, -keep:], ve[:, :, -keep:]), (ka[:, :, -keep:], va[:, :, -keep:])


class _BandMask:
    """Key positions [start - n_cache, start + L) for query positions [start, start + L): a key is
    visible when 0 <= q - k < context; relative-position biases are gathered by distance."""

    def __init__(self, n_cache: int, length: int, context: int, device):
        qpos = torch.arange(length, device=device).unsqueeze(1) + n_cache
        kpos = torch.arange(n_cache + length, device=device).unsqueeze(0)
        dist = qpos - kpos
        self.visible = (dist >= 0) & (dist < context)
        self.dist = dist.clamp(0, context - 1)
        self.neg = torch.zeros(self.visible.shape, device=device).masked_fill(~self.visible, float("-inf"))

    def bias(self, rel_bias: torch.Tensor) -> torch.Tensor:
        return rel_bias[:, self.dist] + self.neg  # (h, L, Nk)


def _ffn(d: int, hidden: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.LayerNorm(d), nn.Linear(d, hidden), nn.GELU(), nn.Dropout(dropout),
                         nn.Linear(hidden, d))


class _HIFBLayer(nn.Module):
    def __init__(self, cfg: RealtimeConfig):
        super().__init__()
        d, h, c, p = cfg.d_model, cfg.n_heads, cfg.context, cfg.dropout
        self.norm_a, self.norm_e, self.norm_t = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn_a, self.attn_e = _WindowAttention(d, h, c, p), _WindowAttention(d, h, c, p)
        self.ffn_a, self.ffn_e, self.ffn_t = _ffn(d, cfg.ffn_dim, p), _ffn(d, cfg.ffn_dim, p), _ffn(d, cfg.ffn_dim, p)
        self.norm_fe, self.norm_fa, self.norm_ft = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.fusion = _CartesianFusion(d, h, c, p)
        self.drop = nn.Dropout(p)

    def forward(self, a, e, tok, cache, mask):
        t = self.norm_t(tok)
        da, cache["ak"], cache["av"] = self.attn_a(self.norm_a(a), t, cache["ak"], cache["av"], mask)
        de, cache["ek"], cache["ev"] = self.attn_e(self.norm_e(e), t, cache["ek"], cache["ev"], mask)
        a = a + self.drop(da)
        e = e + self.drop(de)
        a = a + self.drop(self.ffn_a(a))
        e = e + self.drop(self.ffn_e(e))
        df, cache["fe"], cache["fa"] = self.fusion(self.norm_ft(tok), self.norm_fe(e), self.norm_fa(a),
                                                   cache["fe"], cache["fa"], mask)
        tok = tok + self.drop(df)
        tok = tok + self.drop(self.ffn_t(tok))
        return a, e, tok


class RealtimeLSF(AnimationModel):
    config_class = RealtimeConfig

    def __init__(self, config: RealtimeConfig):
        super().__init__()
        self.config = cfg = config
        if cfg.d_model % cfg.n_heads:
            raise ValueError(f"realtime config: d_model {cfg.d_model} is not divisible by n_heads {cfg.n_heads}")
        if cfg.context < 2 or cfg.lookahead < 0 or cfg.conv_past < 0:
            raise ValueError("realtime config: context must be >= 2, lookahead and conv_past >= 0")
        self.output_kind, self.output_names = cfg.output_kind, list(cfg.output_names)
        self.identity_dim, self.fps = cfg.identity_dim, FPS
        self.stack = SAMPLES_PER_FRAME // cfg.mel_hop
        d, feat = cfg.d_model, self.stack * cfg.n_mels
        self.logmel = LogMel(cfg.n_mels, AUDIO_RATE, cfg.mel_win, cfg.mel_hop)
        # global statistics of the content features, set from the training data
        self.register_buffer("feat_mean", torch.zeros(cfg.n_mels))
        self.register_buffer("feat_std", torch.ones(cfg.n_mels))
        k = cfg.conv_past + 1 + cfg.lookahead
        self.proj_a, self.proj_e = nn.Linear(feat, d), nn.Linear(2 * feat, d)
        self.conv_a, self.conv_e = nn.Conv1d(d, d, k), nn.Conv1d(d, d, k)
        self.ln_a, self.ln_e = nn.LayerNorm(d), nn.LayerNorm(d)
        self.embed_a, self.embed_e = nn.Linear(d, d), nn.Linear(d, d)
        n_id = cfg.n_identities
        self.identity_mlp = nn.Sequential(nn.Linear(max(cfg.identity_dim, 1), 64), nn.LeakyReLU(0.2),
                                          nn.Linear(64, 32), nn.LeakyReLU(0.2), nn.Linear(32, n_id))
        self.identity_style = nn.Linear(n_id, d, bias=False)
        nn.init.normal_(self.identity_style.weight, 1.0, 0.02)
        self.fusion_tokens = nn.Parameter(torch.randn(cfg.n_fusion_tokens, d) * 0.02)
        self.token_from_frame = nn.Linear(d, d)
        self.layers = nn.ModuleList(_HIFBLayer(cfg) for _ in range(cfg.n_layers))
        self.head = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, len(cfg.output_names)))

    # ---- state -------------------------------------------------------------------------------
    @property
    def lookahead_frames(self) -> int:
        return self.config.lookahead

    def init_state(self, batch: int = 1, device: torch.device | str = "cpu") -> dict:
        cfg, dev = self.config, torch.device(device)
        d, h, dh = cfg.d_model, cfg.n_heads, cfg.d_model // cfg.n_heads
        k = cfg.conv_past + cfg.lookahead

        def kv():
            return torch.zeros(batch, h, 0, dh, device=dev)

        return {
            "audio": torch.zeros(batch, 0, device=dev),      # samples not yet turned into mel frames
            "mels": torch.zeros(batch, 0, cfg.n_mels, device=dev),  # mel frames not yet stacked
            "band_hist": torch.zeros(batch, 0, cfg.n_mels, device=dev),  # raw band means, running stats
            "conv_a": torch.zeros(batch, d, k, device=dev),
            "conv_e": torch.zeros(batch, d, k, device=dev),
            "inputs": 0,                                      # model input frames consumed
            "layers": [{"ak": kv(), "av": kv(), "ek": kv(), "ev": kv(), "fe": (kv(), kv()), "fa": (kv(), kv())}
                       for _ in range(cfg.n_layers)],
        }

    # ---- pieces --------------------------------------------------------------------------------
    def style(self, identity: torch.Tensor | None, batch: int, device) -> torch.Tensor:
        dim = max(self.config.identity_dim, 1)
        if identity is None or identity.numel() == 0:
            identity = torch.zeros(batch, dim, device=device)
        identity = identity.to(device=device, dtype=torch.float32).reshape(batch, -1)
        if identity.shape[1] != dim:
            identity = F.pad(identity, (0, max(0, dim - identity.shape[1])))[:, :dim]
        return self.identity_style(torch.softmax(self.identity_mlp(identity), -1))

    def _features(self, state: dict, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """New audio -> (content features, emotion features) of the newly completed input frames."""
        cfg = self.config
        buf = torch.cat([state["audio"], audio.to(state["audio"].dtype)], 1)
        n_mel = self.logmel.num_frames(buf.shape[1])
        mels = self.logmel(buf)
        state["audio"] = buf[:, n_mel * cfg.mel_hop:]
        allm = torch.cat([state["mels"], mels], 1)
        n_in = allm.shape[1] // self.stack
        state["mels"] = allm[:, n_in * self.stack:]
        raw = allm[:, : n_in * self.stack].reshape(allm.shape[0], n_in, self.stack, cfg.n_mels)
        content = ((raw - self.feat_mean) / self.feat_std).flatten(2)
        # emotion stream: spectra relative to causal running statistics of the last norm_window frames
        band = raw.mean(2)
        hist = torch.cat([state["band_hist"], band], 1)
        n_hist = state["band_hist"].shape[1]
        w = cfg.norm_window
        c1 = F.pad(hist.cumsum(1), (0, 0, 1, 0))
        c2 = F.pad((hist * hist).cumsum(1), (0, 0, 1, 0))
        end = torch.arange(n_hist + 1, n_hist + n_in + 1, device=hist.device)
        start = (end - w).clamp(min=0)
        count = (end - start).to(hist.dtype).view(1, -1, 1)
        mean = (c1[:, end] - c1[:, start]) / count
        var = ((c2[:, end] - c2[:, start]) / count - mean * mean).clamp(min=1e-4)
        rel = (raw - mean.unsqueeze(2)) / var.sqrt().unsqueeze(2)
        state["band_hist"] = hist[:, -(w - 1):] if w > 1 else hist[:, :0]
        emotion = torch.cat([rel.flatten(2), content], -1)
        return content, emotion

    def _conv(self, state: dict, key: str, conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
        seq = torch.cat([state[key], x.transpose(1, 2)], 2)
        k = conv.kernel_size[0]
        state[key] = seq[:, :, seq.shape[2] - (k - 1):]
        return F.leaky_relu(conv(seq), 0.2).transpose(1, 2)

    def forward_stream(self, audio: torch.Tensor, state: dict, identity: torch.Tensor | None = None
                       ) -> tuple[torch.Tensor, dict]:
        """Consume new 16 kHz audio (B, s); return the newly finished frames (B, n, C) (activated)."""
        content, emotion = self._features(state, audio)
        b = audio.shape[0]
        n_in = content.shape[1]
        if n_in == 0:
            return content.new_zeros(b, 0, len(self.output_names)), state
        first_out = max(0, state["inputs"] - self.config.lookahead)
        state["inputs"] += n_in
        a = self._conv(state, "conv_a", self.conv_a, self.proj_a(content))
        e = self._conv(state, "conv_e", self.conv_e, self.proj_e(emotion))
        # the first `lookahead` conv outputs of a stream are not frames yet (their future is padding)
        n_out = max(0, state["inputs"] - self.config.lookahead) - first_out
        a, e = a[:, a.shape[1] - n_out:], e[:, e.shape[1] - n_out:]
        if n_out == 0:
            return a.new_zeros(b, 0, len(self.output_names)), state
        s = self.style(identity, b, a.device).unsqueeze(1)
        a = self.embed_a(self.ln_a(a)) * s
        e = self.embed_e(self.ln_e(e)) * s
        tok = self.fusion_tokens + self.token_from_frame(a).unsqueeze(2)
        n_cache = state["layers"][0]["ak"].shape[2]
        mask = _BandMask(n_cache, n_out, self.config.context, a.device)
        for layer, cache in zip(self.layers, state["layers"]):
            a, e, tok = layer(a, e, tok, cache, mask)
        return self.activate(self.head(a)), state

    def activate(self, raw: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(raw) if self.output_kind == "arkit" else raw

    def stream_flush_samples(self) -> int:
        """Zero samples that push every real frame out: the look-ahead plus the last mel window."""
        return (self.config.lookahead + 1) * SAMPLES_PER_FRAME + self.config.mel_win

    # ---- offline -------------------------------------------------------------------------------
    def forward(self, audio: torch.Tensor, identity: torch.Tensor | None = None, chunk_frames: int = 500
                ) -> torch.Tensor:
        """(B, S) 16 kHz -> (B, T, C) with T = num_frames(S); runs the streaming code in chunks."""
        b, s = audio.shape
        t = num_frames(s)
        padded = F.pad(audio, (0, t * SAMPLES_PER_FRAME - s + self.stream_flush_samples()))
        state = self.init_state(b, audio.device)
        outs, step = [], chunk_frames * SAMPLES_PER_FRAME
        for i in range(0, padded.shape[1], step):
            out, state = self.forward_stream(padded[:, i:i + step], state, identity)
            outs.append(out)
        return torch.cat(outs, 1)[:, :t]

