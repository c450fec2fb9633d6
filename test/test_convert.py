"""``lsf convert`` and ``lsf infer`` on the authors' release: checkpoints built from the release's own key names
and pickle contents (test/release_format.py: the vendored HuBERT's old weight-norm names, ``_losses.*`` buffers,
Lightning's keys, real omegaconf containers and numpy scalars in ``hyper_parameters``), never from our model's
state dict; the converted model's output is compared with the release's inference written out independently
(``release_generate``: floor frame count, waveform scaling, normalisation, pairing, HIFB, codes, decoder)."""
from __future__ import annotations

import copy
import os
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from lsf_core.cli.main import main as lsf_main
from lsf_core.config import ConfigError, dump_config, from_dict
from lsf_core.models.lsf_paper import SMALL_OVERRIDES, LSFPaperConfig
from lsf_core.models.registry import load_model
from lsf_core.models.release import ConvertError, convert, map_state, read_checkpoint, read_scaler
from lsf_core.safe_pickle import InertObject, torch_load_inert

sys.path.insert(0, str(Path(__file__).parent))
from release_format import (  # noqa: E402
    lightning_checkpoint,
    random_state,
    release_generate,
    release_pred_shapes,
    release_prior_shapes,
    save_lightning,
)

torch.set_num_threads(1)


def _rel(a, b) -> float:
    a, b = torch.as_tensor(np.asarray(a)), torch.as_tensor(np.asarray(b))
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope="module")
def release(tmp_path_factory, funasr_emotion2vec):
    """Stage-1/stage-2 checkpoints of the small config as Lightning writes them, the stage-2 prior copy equal to
    stage 1; stage 1 with numpy 1.x global names (the release's numpy 1.23), stage 2 with numpy 2.x names."""
    d = tmp_path_factory.mktemp("release")
    cfg = from_dict(LSFPaperConfig, copy.deepcopy(SMALL_OVERRIDES))
    cfg.identity.classes = 5  # the converter must read this from the checkpoint
    # and these from the emotion2vec weights: per-layer ALiBi scales, 3 extra tokens
    cfg.emotion.emotion2vec = {**cfg.emotion.emotion2vec, "num_extra_tokens": 3}
    emotion2vec = funasr_emotion2vec(cfg.emotion.emotion2vec, per_layer_alibi=True)
    gen = torch.Generator().manual_seed(1)
    s1 = random_state(release_prior_shapes(cfg.prior), gen)
    s2 = random_state(release_pred_shapes(cfg, emotion2vec), gen, emotion2vec)
    s2.update({f"motion_prior.{k}": v.clone() for k, v in s1.items()})
    s2["audio_model._ema"] = OrderedDict(w=torch.zeros(2))  # fairseq's EMA teacher entry (not a tensor)
    base = from_dict(LSFPaperConfig, copy.deepcopy(SMALL_OVERRIDES))
    dump_config(base, d / "small.yaml")
    stage1 = save_lightning(d / "stage1.ckpt", "prior", s1, numpy1=True)
    stage2 = save_lightning(d / "stage2.ckpt", "pred", s2)
    out = d / "paper.safetensors"
    rc = lsf_main(["convert", str(stage1), str(stage2), "-o", str(out), "--config", str(d / "small.yaml")])
    return {"dir": d, "s1": s1, "s2": s2, "base": base, "cfg": cfg, "emotion2vec": emotion2vec,
            "stage1": stage1, "stage2": stage2, "rc": rc, "model_file": out}


def test_checkpoints_are_genuine_release_files(release):
    """The fixture is what the issue describes (so the tests below test that): omegaconf containers, numpy scalars
    under both numpy generations' names, Lightning's keys, the vendored HuBERT's weight-norm names."""
    names1 = set(torch.serialization.get_unsafe_globals_in_checkpoint(str(release["stage1"])))
    names2 = set(torch.serialization.get_unsafe_globals_in_checkpoint(str(release["stage2"])))
    common = {"omegaconf.dictconfig.DictConfig", "omegaconf.base.ContainerMetadata", "omegaconf.nodes.AnyNode",
              "builtins.dict", "builtins.int", "collections.defaultdict", "numpy.dtype", "typing.Any"}
    assert common <= names1 and common <= names2 and "omegaconf.listconfig.ListConfig" in names2
    assert "numpy.core.multiarray.scalar" in names1 and "numpy._core.multiarray.scalar" in names2
    ckpt = torch_load_inert(release["stage2"], lambda name: name.startswith("omegaconf."))
    assert {"state_dict", "hyper_parameters", "pytorch-lightning_version", "callbacks", "optimizer_states",
            "lr_schedulers", "loops", "epoch", "global_step"} <= set(ckpt)
    hp = ckpt["hyper_parameters"]
    # loaded as inert data: placeholders for omegaconf (never imported or run), numpy scalars as numpy scalars
    assert isinstance(hp["feature_predictor"], InertObject) and isinstance(hp["one_hot_dim"], InertObject)
    assert isinstance(hp["nfeats"], np.integer) and hp["nfeats"] == 53
    state = ckpt["state_dict"]
    assert "feature_extractor.audiomodel.encoder.pos_conv_embed.conv.weight_g" in state
    assert not any("parametrizations" in k for k in state)
    assert "_losses.losses_train.latent_manifold" in state and "motion_prior._losses.losses_val.quant" in state


def test_convert_cli_round_trip(release):
    """Kills: a swapped or mis-spelt rule in the mapping table (expected tensors are named by hand below, not by
    ``map_state``); old weight-norm names unmapped (the conversion fails)."""
    assert release["rc"] == 0 and release["model_file"].is_file()
    model = load_model(release["model_file"])
    assert model.config.identity.classes == 5
    e2v = model.config.emotion.emotion2vec
    assert e2v["num_extra_tokens"] == 3 and e2v["alibi_scale_per_layer"] is True
    got = model.state_dict()
    s1, s2 = release["s1"], release["s2"]
    fb, hub = "feature_predictor.fusion_blocks.", "feature_extractor.audiomodel.encoder.pos_conv_embed.conv."
    ours_hub = "content_encoder.hubert.encoder.pos_conv_embed.conv."
    # one hand-checked tensor per kind of rule
    pairs = {"prior.encoder.transformer.layers.0.qkv.weight":
             s1["motion_encoder.encoder_transformer.net.0.fn.fn.to_qkv.weight"],
             "prior.decoder.transformer.layers.0.ffn_norm.bias":
             s1["motion_decoder.decoder_transformer.net.1.fn.norm.bias"],
             "prior.decoder.output.weight": s1["motion_decoder.feature_mapping_reverse.weight"],
             "prior.quantizer.codebook.weight": s1["quantize.embedding.weight"],
             "predictor.audio_layers.1.ffn_in.weight": s2["feature_predictor.audio_blocks.1.net.1.fn.fn.l1.weight"],
             "predictor.emotion_layers.0.attn_out.bias": s2["feature_predictor.emo_blocks.0.net.0.fn.fn.to_out.bias"],
             "predictor.fusion_blocks.0.norm_tokens.weight": s2[fb + "0.norm_mm.weight"],
             "predictor.fusion_blocks.1.norm_tokens.bias": s2[fb + "1.norm_mm.bias"],
             "predictor.fusion_blocks.0.norm_audio.weight": s2[fb + "0.norm_a.weight"],
             "predictor.fusion_blocks.1.norm_emotion.weight": s2[fb + "1.norm_v.weight"],
             "predictor.fusion_blocks.0.norm_mlp.weight": s2[fb + "0.norm_mlp.weight"],
             "predictor.fusion_blocks.1.norm_mlp.bias": s2[fb + "1.norm_mlp.bias"],
             "predictor.fusion_blocks.0.mlp_out.bias": s2[fb + "0.mlp.fc2.bias"],
             "predictor.squash_emotion.conv.weight": s2["feature_predictor.squash_e.0.weight"],
             "identity.mlp.4.weight": s2["identity_extractor.4.weight"],
             "content_encoder.hubert.encoder.layers.2.attention.q_proj.weight":
                 s2["feature_extractor.audiomodel.encoder.layers.2.attention.q_proj.weight"],
             f"{ours_hub}parametrizations.weight.original0": s2[hub + "weight_g"],
             f"{ours_hub}parametrizations.weight.original1": s2[hub + "weight_v"],
             "emotion_encoder.net.modality_encoders.AUDIO.context_encoder.blocks.0.attn.qkv.weight":
                 s2["audio_model.modality_encoders.AUDIO.context_encoder.blocks.0.attn.qkv.weight"],
             "emotion_encoder.net.blocks.1.norm2.bias": s2["audio_model.blocks.1.norm2.bias"]}
    for ours, theirs in pairs.items():
        assert torch.equal(got[ours], theirs), ours
    # every weight of ours comes from a distinct release tensor (random values identify them)
    release_vals = {t.numpy().tobytes() for t in list(s1.values()) + list(s2.values())
                    if isinstance(t, torch.Tensor) and t.numel() > 1}
    ours_vals = [v.numpy().tobytes() for k, v in got.items() if not k.startswith("scale_")]
    assert len(set(ours_vals)) == len(ours_vals) and set(ours_vals) <= release_vals


def _clips(speech: np.ndarray) -> dict[str, np.ndarray]:
    """Real speech: an odd length, the whole ~3 s clip, and a quiet clip (-60 dB: the waveform scaling and the
    normalisation eps decide its features)."""
    return {"odd": speech[:12345], "whole": speech, "quiet": speech[4000:4000 + 21111] * 1e-3}


def _infer(release, tmp_path, name, wav, shape, *options) -> np.ndarray:
    path = tmp_path / f"{name}.wav"
    sf.write(path, wav, 16000, subtype="FLOAT")
    np.save(tmp_path / "shape.npy", shape)
    out = tmp_path / f"{name}.npz"
    assert lsf_main(["infer", str(path), "-o", str(out), "--model", str(release["model_file"]),
                     "--identity", str(tmp_path / "shape.npy"), *options]) == 0
    return np.load(out)["flame"]


def test_converted_model_reproduces_the_release(release, speech, tmp_path):
    """``lsf infer --model paper.safetensors`` gives the release's frame count, floor(T50 / 2), and its numbers
    (relative difference <= 1e-4), stage by stage, on real speech of any length and level.

    Kills: padding to ceil(S / 640) before the network; no [-1, 1] waveform scaling; HuBERT normalisation eps
    1e-7; the HIFB fusion step removed (``tokens = fusion(tokens, xa, xe)``); ``norm_mm`` <-> ``norm_mlp`` (or
    any two leaves) swapped in the converter's mapping table; old weight-norm names unmapped; Lightning
    hyper-parameters (omegaconf, numpy scalars) refused."""
    assert release["rc"] == 0
    model = load_model(release["model_file"])
    shape = np.random.default_rng(5).normal(size=300).astype(np.float32)
    for name, wav in _clips(speech).items():
        wav = wav.astype(np.float32)
        ref = release_generate(release["s2"], wav, shape, release["cfg"], release["emotion2vec"])
        frames = ref["motion"].shape[1]
        assert frames == model.clip_frames(wav.size) < -(-wav.size // 640), name  # the release's, not ceil
        with torch.no_grad():
            latents = model.predict_latents(torch.from_numpy(wav)[None], torch.from_numpy(shape)[None])
        assert _rel(latents[:, :frames], ref["latents"]) <= 1e-4, name
        flame = _infer(release, tmp_path, name, wav, shape)
        assert flame.shape == (frames, 53), name
        assert _rel(flame, ref["motion"][0]) <= 1e-4, (name, _rel(flame, ref["motion"][0]))


def test_sampled_codes_match_the_release_generation(release, speech, tmp_path):
    """``--sample-temperature 0.2 --seed 7`` draws the codes the release's generation draws (torch.multinomial at
    temperature 0.2) after ``torch.manual_seed(7)``; nearest code stays the default.

    Kills: sampling ignored (nearest code), the temperature not applied, an unseeded or differently seeded draw."""
    shape = np.zeros(300, np.float32)
    wav = speech[:16000 * 2].astype(np.float32)
    nearest = release_generate(release["s2"], wav, shape, release["cfg"], release["emotion2vec"])
    drawn = release_generate(release["s2"], wav, shape, release["cfg"], release["emotion2vec"], sample=True,
                             temperature=0.2, seed=7)
    assert not torch.equal(drawn["codes"], nearest["codes"])  # the draw matters on these weights
    default = _infer(release, tmp_path, "default", wav, shape)
    assert _rel(default, nearest["motion"][0]) <= 1e-4
    sampled = _infer(release, tmp_path, "sampled", wav, shape, "--sample-temperature", "0.2", "--seed", "7")
    assert _rel(sampled, drawn["motion"][0]) <= 1e-4
    other = _infer(release, tmp_path, "other", wav, shape, "--sample-temperature", "0.2", "--seed", "8")
    assert _rel(other, sampled) > 1e-3
    hot = _infer(release, tmp_path, "hot", wav, shape, "--sample-temperature", "50", "--seed", "7")
    assert _rel(hot, sampled) > 1e-3


def test_unknown_key_is_named(release):
    s2 = OrderedDict(release["s2"])
    s2["feature_predictor.extra_head.weight"] = torch.zeros(3)
    with pytest.raises(ConvertError, match="feature_predictor.extra_head.weight"):
        map_state(release["s1"], s2)


def test_unknown_emotion2vec_key_is_named(release, tmp_path):
    s2 = OrderedDict(release["s2"])
    s2["audio_model.modality_encoders.AUDIO.adapter.weight"] = torch.zeros(3)
    stage2 = save_lightning(tmp_path / "stage2_e2v.ckpt", "pred", s2)
    with pytest.raises(ConfigError, match=r"unexpected \['modality_encoders.AUDIO.adapter.weight'\]"):
        convert(release["stage1"], stage2, tmp_path / "x.safetensors", release["base"])


def test_missing_key_is_named(release, tmp_path):
    s2 = OrderedDict(release["s2"])
    del s2["feature_predictor.fusion_blocks.1.attn.kv.weight"]
    stage2 = save_lightning(tmp_path / "stage2_missing.ckpt", "pred", s2)
    with pytest.raises(ConvertError, match=r"missing \['predictor.fusion_blocks.1.attn.kv.weight'\]"):
        convert(release["stage1"], stage2, tmp_path / "x.safetensors", release["base"])


def test_prior_copy_must_match_stage1(release):
    s2 = OrderedDict(release["s2"])
    s2["motion_prior.quantize.embedding.weight"] = s2["motion_prior.quantize.embedding.weight"] + 1
    with pytest.raises(ConvertError, match="differs from"):
        map_state(release["s1"], s2)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_code_executing_pickle_is_refused(tmp_path, release):
    marker = tmp_path / "pwned"
    bad = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"quantize.embedding.weight": torch.zeros(2, 2)}, "hook": _Payload(marker)}, bad)
    with pytest.raises(ConvertError, match="refused or unreadable"):
        read_checkpoint(bad)
    assert not marker.exists()
    rc = lsf_main(["convert", str(release["stage1"]), str(bad), "-o", str(tmp_path / "x.safetensors")])
    assert rc == 1 and not marker.exists() and not (tmp_path / "x.safetensors").exists()


class _Call:
    """Pickles as a call of ``fn(*args)`` (what a malicious checkpoint would hold)."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


@pytest.mark.parametrize("payload", ["os.system", "builtins.eval", "subprocess.call"])
def test_code_among_lightning_hyper_parameters_is_refused(release, tmp_path, payload):
    """A genuine Lightning checkpoint (omegaconf, numpy scalars: allowed as data) that also names a function
    which would run code is refused, and the code never runs, whether or not torch blocks its module.

    Kills: allowing any global of the checkpoint as an inert object or real callable (e.g. ``inert=lambda n:
    True`` in the converter)."""
    import subprocess

    marker = tmp_path / "pwned"
    call = {"os.system": _Call(os.system, f"touch {marker}"),
            "builtins.eval": _Call(eval, f"__import__('os').system('touch {marker}')"),
            "subprocess.call": _Call(subprocess.call, ["touch", str(marker)])}[payload]
    ckpt = lightning_checkpoint("prior", release["s1"])
    ckpt["hyper_parameters"]["callback"] = call
    path = tmp_path / "evil_lightning.ckpt"
    torch.save(ckpt, path)
    with pytest.raises(ConvertError, match=f"refused or unreadable.*GLOBAL.*{payload.split('.')[-1]}"):
        read_checkpoint(path)
    assert not marker.exists()


def _fake_sklearn_scaler(path, lo, hi, monkeypatch, feature_range=(0, 1)):
    """A pickle laid out like sklearn's MinMaxScaler (class sklearn.preprocessing._data.MinMaxScaler)."""
    import pickle
    import sys
    import types

    import numpy as np

    class MinMaxScaler:
        def __reduce_ex__(self, protocol):
            state = {"feature_range": feature_range, "copy": True, "clip": False, "n_features_in_": len(lo),
                     "data_min_": np.asarray(lo, dtype=np.float64), "data_max_": np.asarray(hi, dtype=np.float64),
                     "_sklearn_version": "1.3.0"}
            return type(self), (), state

    MinMaxScaler.__module__, MinMaxScaler.__qualname__ = "sklearn.preprocessing._data", "MinMaxScaler"
    mod = types.ModuleType("sklearn.preprocessing._data")
    mod.MinMaxScaler = MinMaxScaler
    for name in ("sklearn", "sklearn.preprocessing"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "sklearn.preprocessing._data", mod)
    path.write_bytes(pickle.dumps(MinMaxScaler(), protocol=4))
    monkeypatch.delitem(sys.modules, "sklearn.preprocessing._data")
    return path


def test_scalers_from_release_pickles(release, tmp_path, monkeypatch):
    exp = _fake_sklearn_scaler(tmp_path / "scaler_exp.pkl", [-2.0] * 50, [2.5] * 50, monkeypatch)
    jaw = _fake_sklearn_scaler(tmp_path / "scaler_jaw.pkl", [-0.1, -0.2, -0.3], [0.5, 0.6, 0.7], monkeypatch)
    out = tmp_path / "scaled.safetensors"
    rc = lsf_main(["convert", str(release["stage1"]), str(release["stage2"]), "-o", str(out),
                   "--config", str(release["dir"] / "small.yaml"), "--scaler", str(exp), str(jaw)])
    assert rc == 0
    model = load_model(out)
    assert model.scale_lo[:50].eq(-2.0).all() and model.scale_hi[49] == 2.5
    torch.testing.assert_close(model.scale_hi[50:], torch.tensor([0.5, 0.6, 0.7]))
    scaled = model.scale(torch.full((1, 53), 0.25))
    assert scaled[0, 0].item() == pytest.approx((0.25 + 2.0) / 4.5)
    with pytest.raises(ConvertError, match="over 50 channels"):
        convert(release["stage1"], release["stage2"], tmp_path / "x.safetensors", release["base"], (jaw, jaw))


def test_read_scaler_reads_float32_and_refuses_what_is_not_a_0_1_scaler(tmp_path, monkeypatch):
    """Kills (mutation triage of ``read_scaler``): the dtype dropped (float64 bounds), the feature_range check
    skipped or reading another key, the error messages losing the file name."""
    import pickle

    lo, hi = read_scaler(_fake_sklearn_scaler(tmp_path / "ok.pkl", [-1.0, 0.0], [1.0, 2.0], monkeypatch), 2)
    assert lo.dtype == hi.dtype == torch.float32 and lo.tolist() == [-1.0, 0.0] and hi.tolist() == [1.0, 2.0]
    sym = _fake_sklearn_scaler(tmp_path / "sym.pkl", [-1.0, 0.0], [1.0, 2.0], monkeypatch, feature_range=(-1, 1))
    with pytest.raises(ConvertError, match=r"sym\.pkl: expected a MinMaxScaler to \(0, 1\).*feature_range \(-1, 1\)"):
        read_scaler(sym, 2)
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({"data_min_": [0.0], "data_max_": [1.0]}))
    with pytest.raises(ConvertError, match=r"plain\.pkl: not a pickled sklearn MinMaxScaler"):
        read_scaler(plain, 1)
    with pytest.raises(ConvertError, match=r"missing\.pkl: cannot read the scaler"):
        read_scaler(tmp_path / "missing.pkl", 1)


def test_infer_config_takes_every_size_from_the_checkpoint(release):
    """The converter's config comes from the tensors, not the base config. Kills (mutation triage of
    ``infer_config``): a size check on a mis-spelt key (predictor layers and fusion tokens, identity
    classes, codebook, prior depths then silently stay the base's), a count over the wrong prefix."""
    from lsf_core.models.release import infer_config

    state = map_state(release["s1"], release["s2"])
    off = from_dict(LSFPaperConfig, copy.deepcopy(SMALL_OVERRIDES))
    off.identity.classes += 4
    off.predictor.layers += 1
    off.predictor.fusion_tokens += 3
    off.prior.codebook_size *= 2
    off.prior.encoder.layers += 1
    off.prior.decoder.layers += 2
    cfg, want = infer_config(off, state), release["cfg"]
    assert cfg.identity.classes == want.identity.classes == 5
    assert (cfg.predictor.layers, cfg.predictor.fusion_tokens) == (want.predictor.layers, want.predictor.fusion_tokens)
    assert (cfg.prior.codebook_size, cfg.prior.code_dim) == (want.prior.codebook_size, want.prior.code_dim)
    assert (cfg.prior.encoder.layers, cfg.prior.decoder.layers) == (want.prior.encoder.layers,
                                                                     want.prior.decoder.layers)
    assert cfg.emotion.emotion2vec["num_extra_tokens"] == 3
