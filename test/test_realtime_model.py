"""The realtime preset: streaming equals offline, O(hop) cost per step, identity changes the output."""
from __future__ import annotations

import copy

import pytest
import torch

from lsf_core.models.base import SAMPLES_PER_FRAME, num_frames
from lsf_core.models.registry import build_model, load_model, save_model


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


@pytest.fixture(scope="module", params=[0, 240], ids=["mel_lead0", "mel_lead240"])
def lead_model(request):
    """Both mel framings: windows from sample 0, and windows ending at each model frame's end."""
    torch.manual_seed(0)
    return build_model("realtime", {"mel_lead": request.param}).eval()


def test_streaming_matches_offline_for_any_chunking(lead_model):
    model = lead_model
    g = torch.Generator().manual_seed(1)
    audio = torch.randn(2, 16000 * 3 + 123, generator=g) * 0.1
    identity = torch.randn(2, model.identity_dim, generator=g)
    with torch.no_grad():
        offline = model(audio, identity)
        assert offline.shape == (2, num_frames(audio.shape[1]), 52)
        for sizes in ([640], [1, 7, 5000], [160, 3333, 640 * 5]):
            streamed, _ = _stream(model, audio, identity, sizes)
            assert torch.allclose(streamed, offline, atol=1e-4), (sizes, (streamed - offline).abs().max())


def test_lookahead_is_bounded(lead_model):
    """Changing audio after frame t's end + look-ahead (+ the part of the last mel window reaching past it)
    leaves frame t unchanged."""
    model, cfg = lead_model, lead_model.config
    g = torch.Generator().manual_seed(2)
    audio = torch.randn(1, 16000 * 2, generator=g) * 0.1
    changed = audio.clone()
    t = 20
    horizon = (t + 1 + cfg.lookahead) * SAMPLES_PER_FRAME + cfg.mel_win - cfg.mel_hop - cfg.mel_lead
    changed[:, horizon:] = torch.randn(1, audio.shape[1] - horizon, generator=g)
    with torch.no_grad():
        a, b = model(audio), model(changed)
    assert torch.allclose(a[:, : t + 1], b[:, : t + 1], atol=1e-5)
    assert not torch.allclose(a[:, t + 1: t + 2], b[:, t + 1: t + 2], atol=1e-6)   # the bound is tight


def test_state_stays_bounded_over_a_long_stream(model):
    state = model.init_state(1)
    chunk = torch.zeros(1, SAMPLES_PER_FRAME)
    with torch.no_grad():
        for _ in range(200):
            chunk.normal_(0, 0.1)
            _, state = model.forward_stream(chunk, state)
    cache = state["layers"][0]["k"]
    assert cache.shape[3] == model.config.context - 1
    assert state["audio"].shape[1] < SAMPLES_PER_FRAME and state["band_hist"].shape[1] < model.config.norm_window


def test_identity_changes_the_output(model):
    model = copy.deepcopy(model)  # perturbed below: never the shared session fixture
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
    """The factorised fusion reproduces softmax attention over all (audio_i, emotion_j) pairs."""
    model = copy.deepcopy(model)  # its fusion bias is zeroed below: never the shared session fixture
    layer = model.layers[0]
    g = torch.Generator().manual_seed(4)
    d, n, nf, h, dh = model.config.d_model, 6, model.config.n_fusion_tokens, layer.h, layer.dh
    x = torch.randn(2, 1, n, d, generator=g)
    tok = torch.randn(1, n, nf, d, generator=g)
    from lsf_core.models.realtime import _BandMask

    with torch.no_grad():
        layer.fuse_bias.zero_()
        captured = {}
        handle = layer.fuse_out.register_forward_hook(lambda m, i, o: captured.setdefault("in", i[0]))
        empty = torch.zeros(2, 1, h, 0, dh)
        cache = {"k": empty, "v": empty, "fk": empty, "fv": empty}
        layer(x, tok, cache, _BandMask(0, n, model.config.context, "cpu"))
        handle.remove()
        got = captured["in"][0, -1]  # the last frame's fusion tokens, which see all n frames
        # recompute the stream update to get the inputs of the fusion step
        kf_all, vf_all = cache["fk"][:, 0], cache["fv"][:, 0]  # (2, h, n, dh): [audio, emotion]
        qf = layer.fuse_q(layer.norm_t(tok[0, -1])).view(nf, h, dh)
        ka, ke, va, ve = kf_all[0], kf_all[1], vf_all[0], vf_all[1]
        kp = (ka[:, :, None] + ke[:, None, :]).reshape(h, n * n, dh)   # every (audio_i, emotion_j) pair
        vp = (va[:, :, None] + ve[:, None, :]).reshape(h, n * n, dh)
        s = torch.einsum("fhd,hpd->fhp", qf, kp) / dh ** 0.5
        ref = torch.einsum("fhp,hpd->fhd", torch.softmax(s, -1), vp).reshape(nf, d)
        assert torch.allclose(got, ref, atol=1e-5), (got - ref).abs().max()
