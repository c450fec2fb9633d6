"""The realtime preset: streaming equals offline, O(hop) cost per step, identity changes the output."""
from __future__ import annotations

import pytest
import torch

from lsf_core.models.base import SAMPLES_PER_FRAME, num_frames
from lsf_core.models.registry import build_model, load_model, save_model


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("realtime").eval()


def _stream(model, audio, identity, sizes):
    state = model.init_state(audio.shape[0])
    t = num_frames(audio.shape[1])
    tail = torch.zeros(audio.shape[0], t * SAMPLES_PER_FRAME - audio.shape[1] + model.stream_flush_samples())
    full = torch.cat([audio, tail], 1)
    outs, pos, i = [], 0, 0
    while pos < full.shape[1]:
        n = sizes[i % len(sizes)]
        out, state = model.forward_stream(full[:, pos:pos + n], state, identity)
        outs.append(out)
        pos, i = pos + n, i + 1
    return torch.cat(outs, 1)[:, :t], state


def test_streaming_matches_offline_for_any_chunking(model):
    g = torch.Generator().manual_seed(1)
    audio = torch.randn(2, 16000 * 3 + 123, generator=g) * 0.1
    identity = torch.randn(2, model.identity_dim, generator=g)
    with torch.no_grad():
        offline = model(audio, identity)
        assert offline.shape == (2, num_frames(audio.shape[1]), 52)
        for sizes in ([640], [1, 7, 5000], [160, 3333, 640 * 5]):
            streamed, _ = _stream(model, audio, identity, sizes)
            assert torch.allclose(streamed, offline, atol=1e-4), (sizes, (streamed - offline).abs().max())


def test_lookahead_is_bounded(model):
    """Changing audio more than look-ahead + one frame after frame t leaves frame t unchanged."""
    g = torch.Generator().manual_seed(2)
    audio = torch.randn(1, 16000 * 2, generator=g) * 0.1
    changed = audio.clone()
    t = 20
    horizon = (t + 1 + model.config.lookahead) * SAMPLES_PER_FRAME + model.config.mel_win
    changed[:, horizon:] = torch.randn(1, audio.shape[1] - horizon, generator=g)
    with torch.no_grad():
        a, b = model(audio), model(changed)
    assert torch.allclose(a[:, : t + 1], b[:, : t + 1], atol=1e-5)
    assert not torch.allclose(a[:, t + 6:], b[:, t + 6:], atol=1e-3)


def test_state_stays_bounded_over_a_long_stream(model):
    state = model.init_state(1)
    chunk = torch.zeros(1, SAMPLES_PER_FRAME)
    with torch.no_grad():
        for _ in range(200):
            chunk.normal_(0, 0.1)
            _, state = model.forward_stream(chunk, state)
    cache = state["layers"][0]["ak"]
    assert cache.shape[2] == model.config.context - 1
    assert state["audio"].shape[1] < SAMPLES_PER_FRAME and state["band_hist"].shape[1] < model.config.norm_window


def test_identity_changes_the_output(model):
    audio = torch.randn(1, 16000, generator=torch.Generator().manual_seed(3)) * 0.1
    with torch.no_grad():
        for p in model.identity_mlp.parameters():  # a trained MLP reacts to identity; make sure ours does
            p.add_(torch.randn_like(p) * 0.5)
        a = model(audio, torch.zeros(1, model.identity_dim))
        b = model(audio, torch.full((1, model.identity_dim), 2.0))
    assert (a - b).abs().max() > 1e-4


def test_save_and_load_round_trip(tmp_path, model):
    path = save_model(model, tmp_path / "m.safetensors")
    loaded = load_model(path)
    audio = torch.randn(1, 8000) * 0.1
    with torch.no_grad():
        assert torch.allclose(loaded(audio), model(audio), atol=1e-6)


def test_cartesian_fusion_equals_explicit_pair_attention(model):
    """The factorised fusion reproduces softmax attention over all (emotion_i, audio_j) pairs."""
    fusion = model.layers[0].fusion
    g = torch.Generator().manual_seed(4)
    d, n = model.config.d_model, 6
    tok = torch.randn(1, 1, 2, d, generator=g)
    e, a = torch.randn(1, n, d, generator=g), torch.randn(1, n, d, generator=g)
    with torch.no_grad():
        for p in (fusion.rel_bias_e, fusion.rel_bias_a):
            p.zero_()
        h, dh = fusion.h, fusion.dh
        empty = (torch.zeros(1, h, 0, dh), torch.zeros(1, h, 0, dh))
        from lsf_core.models.realtime import _BandMask

        # one query frame (the last) that sees all n frames: pass n frames, read the last query
        mask = _BandMask(0, n, model.config.context, "cpu")
        tokens = tok.expand(1, n, 2, d).contiguous()
        out, _, _ = fusion(tokens, e, a, empty, empty, mask)
        got = out[0, -1]
        q = fusion.q(tok[0, 0]).view(2, h, dh)
        ke, ve = fusion.kv_e(e[0]).view(n, 2, h, dh).unbind(1)
        ka, va = fusion.kv_a(a[0]).view(n, 2, h, dh).unbind(1)
        kp = (ke[:, None] + ka[None, :]).reshape(n * n, h, dh)
        vp = (ve[:, None] + va[None, :]).reshape(n * n, h, dh)
        s = torch.einsum("fhd,phd->fhp", q, kp) / dh ** 0.5
        ref = torch.einsum("fhp,phd->fhd", torch.softmax(s, -1), vp).reshape(2, d)
        assert torch.allclose(got, fusion.out(ref), atol=1e-5)
