"""The ``paper`` preset (LSF-Animation as released): sizes, config round trip, per-clip batching, HuBERT
wrapper, quantiser, sampling, save/load. Real espeak-ng speech, real forward passes, small configs
where sizes do not matter."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from lsf_core.config import ConfigError, dump_config, load_config
from lsf_core.models.base import num_frames
from lsf_core.models.hifb import HIFBConfig, HIFBPredictor
from lsf_core.models.lsf_paper import (
    SMALL_OVERRIDES,
    IdentityConfig,
    IdentityEncoder,
    LSFPaperConfig,
    minmax_waveform,
    pair_frames,
)
from lsf_core.models.motion_prior import MotionPrior, MotionPriorConfig
from lsf_core.models.registry import build_model, load_model, save_model

torch.set_num_threads(1)


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    return build_model("paper", copy.deepcopy(SMALL_OVERRIDES)).eval()


@pytest.fixture(scope="module")
def clips(speech):
    """Real speech cut to 1.3 s and 0.37 s (odd lengths: 20800 and 5920 samples)."""
    return torch.from_numpy(speech[:20800].copy()), torch.from_numpy(speech[4000:9920].copy())


def test_full_size_parameter_count():
    predictor = HIFBPredictor(HIFBConfig(), IdentityConfig().classes)
    identity = IdentityEncoder(IdentityConfig())
    prior = MotionPrior(MotionPriorConfig())
    parts = {"predictor": _count(predictor), "identity MLP": _count(identity),
             "codebook": _count(prior.quantizer), "motion decoder": _count(prior.decoder)}
    total = sum(parts.values())
    print({k: f"{v / 1e6:.3f} M" for k, v in parts.items()}, f"total {total / 1e6:.3f} M",
          f"(motion encoder {_count(prior.encoder) / 1e6:.3f} M)")
    assert abs(parts["predictor"] - 16.2e6) / 16.2e6 < 0.02
    assert abs(total - 19.5e6) / 19.5e6 < 0.02
    assert parts["codebook"] == 256 * 128


def test_config_yaml_round_trip(tmp_path):
    cfg = LSFPaperConfig()
    cfg.predictor.layers = 7
    cfg.prior.decoder.ffn = 100
    cfg.content.hubert = {"num_hidden_layers": 3}
    dump_config(cfg, tmp_path / "paper.yaml")
    back = load_config(LSFPaperConfig, tmp_path / "paper.yaml")
    assert back == cfg
    assert back.prior.decoder.ffn == 100 and back.prior.encoder.ffn == 384


def test_forward_odd_lengths_and_padded_batch(small, clips):
    """The frame grid: num_frames(S) frames, the network's clip_frames(S) = floor(T50 / 2) of them, the last one
    held after them; batch items zero past their own grid.

    Kills: the held frames zeroed or taken from a padded network input; a clip's frames depending on its batch."""
    long, short = clips
    with torch.no_grad():
        y_long = small(long[None])
        batch = torch.stack([long, torch.nn.functional.pad(short, (0, len(long) - len(short)))])
        ident = torch.stack([torch.zeros(300), torch.randn(300)])
        y_short = small(short[None], ident[1:])
        y_batch = small(batch, ident, lengths=torch.tensor([len(long), len(short)]))
    assert y_long.shape == (1, num_frames(20800), 53) == (1, 33, 53)
    assert y_short.shape == (1, num_frames(5920), 53) == (1, 10, 53)
    # T50 = 64 for 20800 samples, 18 for 5920: the network gives 32 and 9 frames, the grid holds the last
    assert small.clip_frames(20800) == 32 and small.clip_frames(5920) == 9
    assert torch.equal(y_long[0, 32], y_long[0, 31]) and not torch.equal(y_long[0, 31], y_long[0, 30])
    assert torch.equal(y_short[0, 9], y_short[0, 8]) and not torch.equal(y_short[0, 8], y_short[0, 7])
    assert y_batch.shape == (2, 33, 53)
    torch.testing.assert_close(y_batch[0], y_long[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(y_batch[1, :10], y_short[0], rtol=1e-4, atol=1e-5)
    assert torch.all(y_batch[1, 10:] == 0)
    assert torch.isfinite(y_batch).all()
    # outputs live in FLAME units: the decoded [0, 1]-ish scaled motion mapped through the min-max buffers
    assert not torch.allclose(y_long[0, 0], y_long[0, -1])


def test_too_short_audio_is_refused(small):
    """The shortest clip gives two network frames (InstanceNorm needs more than one); shorter is a clear error.

    Kills: a minimum that lets one-frame clips crash inside the network."""
    with torch.no_grad():
        assert small.clip_frames(1360) == 2 and small(torch.randn(1, 1360)).shape == (1, 3, 53)
    with pytest.raises(ValueError, match="at least 1360"):
        small(torch.zeros(1, 1359))
    with pytest.raises(ValueError, match="identity must be"):
        small(torch.zeros(1, 4000), torch.zeros(1, 100))


def test_frozen_parts(small):
    hubert = small.content_encoder.hubert
    assert not any(p.requires_grad for p in hubert.feature_extractor.parameters())
    assert not any(p.requires_grad for p in hubert.feature_projection.parameters())
    for i, layer in enumerate(hubert.encoder.layers):
        assert all(p.requires_grad == (i >= 2) for p in layer.parameters())
    assert not any(p.requires_grad for p in small.emotion_encoder.parameters())
    assert all(p.requires_grad for p in small.predictor.parameters())
    small.train()
    assert not small.emotion_encoder.net.training and small.predictor.training
    small.eval()


def test_content_encoder_equals_transformers_hubert(small, clips, tmp_path):
    """HuBERT on the waveform normalised as the release's Wav2Vec2 processor (transformers 4.10) does, eps 1e-5,
    here on a quiet waveform where the eps matters.

    Kills: eps 1e-7 (today's transformers) or no normalisation."""
    from transformers import HubertConfig, HubertModel

    wav = clips[0][None] * 1e-3
    ref = HubertModel(HubertConfig(**SMALL_OVERRIDES["content"]["hubert"])).eval()
    ref.load_state_dict(small.content_encoder.hubert.state_dict())
    x = wav[0].numpy()
    norm = torch.from_numpy((x - np.mean(x)) / np.sqrt(np.var(x) + 1e-5))[None]
    with torch.no_grad():
        expected = ref(norm).last_hidden_state
        t50 = expected.shape[1] // 2 * 2
        expected = expected[:, :t50].reshape(1, t50 // 2, -1)
        ours = pair_frames(small.content_encoder(wav))
    assert small.content_encoder.frames(wav.shape[1]) == expected.shape[1] * 2 == 64
    rel = (ours - expected).norm() / expected.norm()
    assert rel <= 1e-4, rel
    # a HF-format directory loads the same weights, and the model keeps only the architecture in its config
    ref.save_pretrained(tmp_path / "hubert")
    cfg = copy.deepcopy(SMALL_OVERRIDES)
    cfg["content"] = {"pretrained_dir": str(tmp_path / "hubert")}
    model = build_model("paper", cfg)
    assert model.config.content.pretrained_dir == ""
    assert model.config.content.hubert["hidden_size"] == 64
    torch.testing.assert_close(model.content_encoder.hubert.state_dict(), ref.state_dict())
    # a directory saved with the old weight-norm names (the release's vendored HuBERT, hubert-base-ls960's own
    # file) loads the same weights
    from safetensors.torch import load_file, save_file

    from lsf_core.models.release import hubert_key

    state = load_file(str(tmp_path / "hubert" / "model.safetensors"))
    old = {k.replace("parametrizations.weight.original0", "weight_g").replace("parametrizations.weight.original1",
                                                                              "weight_v"): v for k, v in state.items()}
    assert "encoder.pos_conv_embed.conv.weight_g" in old and {hubert_key(k) for k in old} == set(state)
    save_file(old, str(tmp_path / "hubert" / "model.safetensors"), metadata={"format": "pt"})
    cfg["content"] = {"pretrained_dir": str(tmp_path / "hubert")}
    torch.testing.assert_close(build_model("paper", cfg).content_encoder.hubert.state_dict(), ref.state_dict())


def test_pair_frames_drops_an_odd_frame_and_pads_nothing():
    """Kills: padding (or interpolating) to a longer frame count; keeping the odd frame."""
    feats = torch.arange(7 * 2, dtype=torch.float32).reshape(1, 7, 2)
    out = pair_frames(feats)
    assert out.shape == (1, 3, 4)
    assert out[0, 0].tolist() == [0, 1, 2, 3] and out[0, 2].tolist() == [8, 9, 10, 11]
    with pytest.raises(ValueError, match="too short"):
        pair_frames(feats[:, :1])


def test_waveform_minmax_is_sklearns():
    """The release's ``audio_normalize``: sklearn ``minmax_scale(x, feature_range=(-1, 1))``, near-constant clips
    included (range < 10 eps counts as 1).

    Kills: scaling by the peak, no offset, dividing by a zero range."""
    from sklearn.preprocessing import minmax_scale

    rng = np.random.default_rng(0)
    for x in (rng.normal(0.01, 0.003, 5000), rng.uniform(-0.2, 0.7, 777), np.full(900, 0.25),
              np.r_[np.zeros(500), 1e-7]):
        x = x.astype(np.float32)
        got = minmax_waveform(torch.from_numpy(x)[None])[0].numpy()
        np.testing.assert_allclose(got, minmax_scale(x, feature_range=(-1, 1)), rtol=1e-5, atol=1e-6)


def test_quantizer_nearest_code_and_layout(small):
    prior = small.prior
    latents = torch.randn(2, 6, 64)
    quant, idx, loss = prior.quantize(latents)
    rows = latents.transpose(1, 2).reshape(-1, 32)
    brute = torch.cdist(rows, prior.quantizer.codebook.weight).argmin(1)
    assert idx.shape == (2, 64 * 6 // 32)
    assert torch.equal(idx.reshape(-1), brute)
    torch.testing.assert_close(quant.transpose(1, 2).reshape(-1, 32), prior.quantizer.codebook.weight[brute])
    assert loss > 0
    recon, _ = prior(torch.rand(1, 8, 53))
    assert recon.shape == (1, 8, 53)


def test_sampling_option_is_seeded_per_clip(small, clips):
    """``codes: sample`` (``lsf infer --sample-temperature``): draws from a generator seeded per clip, so the output
    repeats and does not depend on the batch; nearest code stays the default; bad settings are named.

    Kills: sampling from the global generator (unseeded), one generator for the whole batch, a default of
    sampled codes."""
    long, short = clips
    assert LSFPaperConfig().codes == "nearest" and small.config.codes == "nearest"
    batch = torch.stack([long, torch.nn.functional.pad(short, (0, len(long) - len(short)))])
    lengths = torch.tensor([len(long), len(short)])
    with torch.no_grad():
        nearest = small(short[None])
        small.set_sampling(0.2, seed=3)
        try:
            torch.manual_seed(100)
            a = small(short[None])
            torch.manual_seed(200)
            b = small(short[None])
            in_batch = small(batch, lengths=lengths)[1:, :10]
            small.set_sampling(0.2, seed=4)
            c = small(short[None])
        finally:
            small.set_sampling(None)
    assert torch.equal(a, b) and not torch.equal(a, nearest)
    torch.testing.assert_close(in_batch, a, rtol=1e-4, atol=1e-5)
    assert not torch.equal(a, c)
    assert small.config.codes == "nearest"
    with pytest.raises(ConfigError, match="temperature must be > 0"):
        small.set_sampling(0.0)
    with pytest.raises(ConfigError, match="codes must be one of"):
        build_model("paper", {**copy.deepcopy(SMALL_OVERRIDES), "codes": "beam"})


def test_sample_draws_vary_and_cold_sampling_is_the_forward(small, clips):
    wav = clips[1][None]
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        draws = small.sample(wav, None, n=3, generator=gen)
        cold = small.sample(wav, None, n=1, temperature=1e-8, generator=gen)
        det = small(wav)
    assert draws.shape == (3, 1, 10, 53)
    assert not torch.allclose(draws[0], draws[1])
    torch.testing.assert_close(cold[0], det)


def test_scale_unscale_round_trip(small):
    params = torch.tensor(np.r_[np.linspace(-3, 3, 50), [-0.1, 0.2, 0.5]], dtype=torch.float32)[None]
    scaled = small.scale(params)
    assert scaled[0, [0, 49, 50, 51, 52]].tolist() == pytest.approx([0.0, 1.0, 0.0, 0.5, 1.0], abs=1e-6)
    torch.testing.assert_close(small.unscale(scaled), params)


def test_save_load_round_trip(small, clips, tmp_path):
    path = save_model(small, tmp_path / "paper_small.safetensors")
    loaded = load_model(path)
    wav = clips[1][None]
    with torch.no_grad():
        assert torch.equal(loaded(wav), small(wav))
    assert loaded.config == small.config


def test_position_dropout_only_in_training(small):
    x = torch.zeros(1, 50, 64)
    pos = small.predictor.positions
    pos.train()
    dropped = (pos(x) == 0).float().mean()
    pos.eval()
    assert 0.03 < dropped < 0.2 and (pos(x) == 0).float().mean() < 0.03
