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
import warnings
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
    # samples of silence before the first one: with mel_win - mel_hop, the last mel window of every model
    # frame ends at the frame's end, so a frame needs no audio past its own end (15 ms less latency)
    mel_lead: int = 240
    d_model: int = 128
    n_layers: int = 3
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


class _GroupLinear(nn.Module):
    """G independent linear maps applied to a stacked (G, ..., in) tensor in one batched matmul."""

    def __init__(self, groups: int, d_in: int, d_out: int, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(groups, d_in, d_out))
        self.bias = nn.Parameter(torch.zeros(groups, 1, d_out)) if bias else None
        bound = 1.0 / math.sqrt(d_in)
        nn.init.uniform_(self.weight, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g, *lead, d = x.shape
        flat = x.reshape(g, -1, d)
        y = torch.baddbmm(self.bias, flat, self.weight) if self.bias is not None else torch.bmm(flat, self.weight)
        return y.view(g, *lead, -1)


class _GroupNorm(nn.Module):
    """LayerNorm over the last dim with separate affine parameters per group."""

    def __init__(self, groups: int, d: int):
        super().__init__()
        self.d = d
        self.weight = nn.Parameter(torch.ones(groups, d))
        self.bias = nn.Parameter(torch.zeros(groups, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (x.shape[0],) + (1,) * (x.dim() - 2) + (self.d,)
        return torch.addcmul(self.bias.view(shape), F.layer_norm(x, (self.d,)), self.weight.view(shape))


class _GroupFFN(nn.Module):
    def __init__(self, groups: int, d: int, hidden: int, dropout: float):
        super().__init__()
        self.norm = _GroupNorm(groups, d)
        self.fc1, self.fc2 = _GroupLinear(groups, d, hidden), _GroupLinear(groups, hidden, d)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(F.silu(self.fc1(self.norm(x)))))


class _BandMask:
    """Key positions [start - n_cache, start + L) for query positions [start, start + L): a key is
    visible when 0 <= q - k < context; relative-position biases are gathered by distance."""

    def __init__(self, n_cache: int, length: int, context: int, device):
        qpos = torch.arange(length, device=device).unsqueeze(1) + n_cache
        kpos = torch.arange(n_cache + length, device=device).unsqueeze(0)
        dist = qpos - kpos
        visible = (dist >= 0) & (dist < context)
        self.dist = dist.clamp(0, context - 1)
        self.neg = torch.zeros(visible.shape, device=device).masked_fill(~visible, float("-inf"))

    def bias(self, rel_bias: torch.Tensor) -> torch.Tensor:
        """(..., context) learned biases -> (..., L, Nk) with invisible keys at -inf."""
        return rel_bias[..., self.dist] + self.neg


class _HIFBLayer(nn.Module):
    """One Hierarchical Interaction Fusion layer. The audio (content) and emotion streams are stacked
    as group 0 and 1 and run through the same shaped operations in one batched call each:

    1. each stream attends to its own window (cached keys/values) and to its frame's fusion tokens;
    2. each stream runs its feed-forward block;
    3. the fusion tokens attend to the emotion x audio pairs of the window (factorised exactly:
       pair key/value = emotion part + audio part), then run their own feed-forward block.
    """

    def __init__(self, cfg: RealtimeConfig):
        super().__init__()
        d, h, p = cfg.d_model, cfg.n_heads, cfg.dropout
        self.h, self.dh, self.context = h, d // h, cfg.context
        self.norm_x, self.norm_t = _GroupNorm(2, d), nn.LayerNorm(d)
        self.qkv = _GroupLinear(2, d, 3 * d)            # stream self-attention
        self.tok_kv = _GroupLinear(2, d, 2 * d)         # fusion tokens as extra keys of each stream
        self.attn_out = _GroupLinear(2, d, d)
        self.rel_bias = nn.Parameter(torch.zeros(2, 1, h, cfg.context))
        self.ffn = _GroupFFN(2, d, cfg.ffn_dim, p)
        self.norm_f = _GroupNorm(2, d)
        self.fuse_q = nn.Linear(d, d)
        self.fuse_kv = _GroupLinear(2, d, 2 * d)        # key/value parts of audio (0) and emotion (1)
        self.fuse_out = nn.Linear(d, d)
        self.fuse_bias = nn.Parameter(torch.zeros(2, 1, h, cfg.context))
        self.ffn_t = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, cfg.ffn_dim), nn.SiLU(), nn.Dropout(p),
                                   nn.Linear(cfg.ffn_dim, d))
        self.drop = nn.Dropout(p)

    def _heads(self, x: torch.Tensor, parts: int) -> tuple[torch.Tensor, ...]:
        """(G, B, L, parts*d) -> parts tensors of (G, B, H, L, dh)."""
        g, b, length, _ = x.shape
        return x.view(g, b, length, parts, self.h, self.dh).permute(3, 0, 1, 4, 2, 5).unbind(0)

    def forward(self, x: torch.Tensor, tok: torch.Tensor, cache: dict, mask: _BandMask):
        """x: (2, B, L, d) stacked [audio, emotion]; tok: (B, L, nf, d) fusion tokens."""
        g, b, length, d = x.shape
        nf = tok.shape[2]
        keep = self.context - 1
        scale = 1.0 / math.sqrt(self.dh)
        # 1. windowed self-attention + own fusion tokens
        q, k, v = self._heads(self.qkv(self.norm_x(x)), 3)
        keys, vals = torch.cat([cache["k"], k], 3), torch.cat([cache["v"], v], 3)
        cache["k"], cache["v"] = keys[:, :, :, -keep:], vals[:, :, :, -keep:]
        t = self.norm_t(tok)
        tk, tv = self.tok_kv(t.unsqueeze(0).expand(g, -1, -1, -1, -1)).view(
            g, b, length, nf, 2, self.h, self.dh).permute(4, 0, 1, 5, 2, 3, 6).unbind(0)  # (G,B,H,L,nf,dh)
        s_win = (q @ keys.transpose(-1, -2)) * scale + mask.bias(self.rel_bias)
        s_tok = (q.unsqueeze(-2) @ tk.transpose(-1, -2)).squeeze(-2) * scale
        p = torch.softmax(torch.cat([s_win, s_tok], -1), -1)
        nk = keys.shape[3]
        o = p[..., :nk] @ vals + (p[..., nk:].unsqueeze(-2) @ tv).squeeze(-2)
        x = x + self.drop(self.attn_out(o.transpose(2, 3).reshape(g, b, length, d)))
        # 2. feed-forward of both streams
        x = x + self.drop(self.ffn(x))
        # 3. fusion tokens read the emotion x audio Cartesian product of the window
        kf, vf = self._heads(self.fuse_kv(self.norm_f(x)), 2)
        kf, vf = torch.cat([cache["fk"], kf], 3), torch.cat([cache["fv"], vf], 3)
        cache["fk"], cache["fv"] = kf[:, :, :, -keep:], vf[:, :, :, -keep:]
        qf = self.fuse_q(self.norm_t(tok)).view(b, length, nf, self.h, self.dh).permute(0, 3, 1, 2, 4)
        sf = torch.einsum("bhlfd,gbhkd->gbhlfk", qf, kf) * scale + mask.bias(self.fuse_bias).unsqueeze(-2)
        pf = torch.softmax(sf, -1)
        of = torch.einsum("gbhlfk,gbhkd->bhlfd", pf, vf)  # sum over groups = pair value e_i + a_j
        tok = tok + self.drop(self.fuse_out(of.permute(0, 2, 3, 1, 4).reshape(b, length, nf, d)))
        tok = tok + self.drop(self.ffn_t(tok))
        return x, tok


class _SteadyHop(nn.Module):
    """``RealtimeLSF._hop`` for one frame over full caches, as one module over flat tensors (for tracing)."""

    def __init__(self, model: RealtimeLSF, mask: _BandMask):
        super().__init__()
        self.model, self.mask = model, mask

    def forward(self, content, emotion, conv_a, conv_e, style, *flat: torch.Tensor):
        caches = [dict(zip(("k", "v", "fk", "fv"), flat[i: i + 4])) for i in range(0, len(flat), 4)]
        out, conv_a, conv_e = self.model._hop(content, emotion, conv_a, conv_e, style, 1, caches, self.mask)
        return (out, conv_a, conv_e, *(c[k] for c in caches for k in ("k", "v", "fk", "fv")))


class RealtimeLSF(AnimationModel):
    config_class = RealtimeConfig

    def __init__(self, config: RealtimeConfig):
        super().__init__()
        self.config = cfg = config
        if cfg.d_model % cfg.n_heads:
            raise ValueError(f"realtime config: d_model {cfg.d_model} is not divisible by n_heads {cfg.n_heads}")
        if cfg.context < 2 or cfg.lookahead < 0 or cfg.conv_past < 0:
            raise ValueError("realtime config: context must be >= 2, lookahead and conv_past >= 0")
        if not 0 <= cfg.mel_lead < cfg.mel_win:
            raise ValueError(f"realtime config: mel_lead must be within 0..{cfg.mel_win - 1}, got {cfg.mel_lead}")
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
            return torch.zeros(2, batch, h, 0, dh, device=dev)

        return {
            "audio": torch.zeros(batch, cfg.mel_lead, device=dev),  # samples not yet turned into mel frames
            "mels": torch.zeros(batch, 0, cfg.n_mels, device=dev),  # mel frames not yet stacked
            "band_hist": torch.zeros(batch, 0, cfg.n_mels, device=dev),  # raw band means, running stats
            "conv_a": torch.zeros(batch, d, k, device=dev),
            "conv_e": torch.zeros(batch, d, k, device=dev),
            "inputs": 0,                                      # model input frames consumed
            "layers": [{"k": kv(), "v": kv(), "fk": kv(), "fv": kv()} for _ in range(cfg.n_layers)],
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

    @staticmethod
    def _conv(past: torch.Tensor, conv: nn.Conv1d, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Causal conv over (kept past inputs, new inputs): (activated outputs, inputs to keep)."""
        seq = torch.cat([past, x.transpose(1, 2)], 2)
        return F.leaky_relu(conv(seq), 0.2).transpose(1, 2), seq[:, :, seq.shape[2] - (conv.kernel_size[0] - 1):]

    def _hop(self, content: torch.Tensor, emotion: torch.Tensor, conv_a: torch.Tensor, conv_e: torch.Tensor,
             style: torch.Tensor, n_out: int, caches: list[dict], mask: _BandMask | None):
        """Input frames -> (newest ``n_out`` output frames, kept conv inputs); caches are updated in place."""
        a, conv_a = self._conv(conv_a, self.conv_a, self.proj_a(content))
        e, conv_e = self._conv(conv_e, self.conv_e, self.proj_e(emotion))
        if n_out == 0:
            return a[:, :0, :0], conv_a, conv_e
        a, e = a[:, a.shape[1] - n_out:], e[:, e.shape[1] - n_out:]
        a = self.embed_a(self.ln_a(a)) * style
        e = self.embed_e(self.ln_e(e)) * style
        tok = self.fusion_tokens + self.token_from_frame(a).unsqueeze(2)
        if mask is None:
            mask = _BandMask(caches[0]["k"].shape[3], n_out, self.config.context, a.device)
        x = torch.stack([a, e])
        for layer, cache in zip(self.layers, caches):
            x, tok = layer(x, tok, cache, mask)
        return self.activate(self.head(x[0])), conv_a, conv_e

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
        # the first `lookahead` conv outputs of a stream are not frames yet (their future is padding)
        n_out = max(0, state["inputs"] - self.config.lookahead) - first_out
        if "style" not in state or state["style_of"] is not identity:   # once per stream and identity
            state["style"], state["style_of"] = self.style(identity, b, audio.device).unsqueeze(1), identity
        args = (content, emotion, state["conv_a"], state["conv_e"], state["style"])
        steady = n_in == 1 and n_out == 1 and state["layers"][0]["k"].shape[3] == self.config.context - 1
        if steady and not self.training and not torch.is_grad_enabled():
            out, state["conv_a"], state["conv_e"] = self._traced_hop(args, state["layers"])
        else:
            out, state["conv_a"], state["conv_e"] = self._hop(*args, n_out, state["layers"], None)
        if n_out == 0:
            return content.new_zeros(b, 0, len(self.output_names)), state
        return out, state

    def _traced_hop(self, args: tuple, caches: list[dict]):
        """Steady state (full caches, one frame in, one out): the whole hop as one traced graph, about
        twice as fast as eager on a CPU. Same operations, same numbers; one graph per device, dtype and
        autocast precision, rebuilt after the model moves or changes dtype."""
        flat = [c[k] for c in caches for k in ("k", "v", "fk", "fv")]
        dev = args[0].device.type
        autocast = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else None
        key = (args[0].shape[0], args[0].device, args[0].dtype, autocast)
        traced = self.__dict__.setdefault("_traced", {})
        if key not in traced:
            mask = _BandMask(self.config.context - 1, 1, self.config.context, args[0].device)
            with warnings.catch_warnings():  # torch.jit.trace still works; its deprecation notice is noise here
                warnings.simplefilter("ignore", DeprecationWarning)
                traced[key] = torch.jit.trace(_SteadyHop(self, mask), (*args, *flat), check_trace=False)
        out, conv_a, conv_e, *new = traced[key](*args, *flat)
        for i, cache in enumerate(caches):
            cache["k"], cache["v"], cache["fk"], cache["fv"] = new[4 * i: 4 * i + 4]
        return out, conv_a, conv_e

    def _apply(self, fn, recurse=True):
        self.__dict__.pop("_traced", None)
        return super()._apply(fn, recurse)

    def activate(self, raw: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(raw) if self.output_kind == "arkit" else raw

    def stream_flush_samples(self) -> int:
        """Zero samples that push every real frame out: the look-ahead plus the last mel window."""
        return (self.config.lookahead + 1) * SAMPLES_PER_FRAME + self.config.mel_win - self.config.mel_lead

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

