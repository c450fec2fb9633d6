"""``lsf convert`` on fake release checkpoints: the release's exact key names and shapes (generated from the
reference code's module structure at a reduced size), saved as real Lightning-style .ckpt files."""
from __future__ import annotations

import copy
import os
from collections import OrderedDict

import pytest
import torch

from lsf_core.cli.main import main as lsf_main
from lsf_core.config import ConfigError, dump_config, from_dict
from lsf_core.models.lsf_paper import SMALL_OVERRIDES, LSFPaperConfig, LSFPaperModel
from lsf_core.models.motion_prior import MotionPriorConfig, TransformerConfig
from lsf_core.models.registry import load_model
from lsf_core.models.release import ConvertError, convert, map_state, read_checkpoint

torch.set_num_threads(1)


def _transformer(prefix: str, t: TransformerConfig, layers: int | None = None) -> dict[str, tuple]:
    """transformer_module.py: Transformer.net = [Residual(Norm(Attention)), Residual(Norm(MLP))] * L."""
    w, f = t.width, t.ffn
    keys = {}
    for i in range(t.layers if layers is None else layers):
        a, m = f"{prefix}net.{2 * i}.fn.", f"{prefix}net.{2 * i + 1}.fn."
        keys.update({a + "norm.weight": (w,), a + "norm.bias": (w,), a + "fn.to_qkv.weight": (3 * w, w),
                     a + "fn.to_out.weight": (w, w), a + "fn.to_out.bias": (w,),
                     m + "norm.weight": (w,), m + "norm.bias": (w,), m + "fn.l1.weight": (f, w), m + "fn.l1.bias": (f,),
                     m + "fn.l2.weight": (w, f), m + "fn.l2.bias": (w,)})
    return keys


def _losses(prefix: str, names: list[str]) -> dict[str, tuple]:
    return {f"{prefix}_losses.losses_{split}.{n}": () for split in ("train", "test", "val") for n in names + ["count"]}


def release_prior_shapes(p: MotionPriorConfig) -> dict[str, tuple]:
    """framework/model/model_vqvae_prior.py VQVAE (motion_encoder, motion_decoder, quantize)."""
    we, wd = p.encoder.width, p.decoder.width
    keys = {"motion_encoder.feature_mapping.0.weight": (we, p.motion_dim),
            "motion_encoder.feature_mapping.0.bias": (we,),
            "motion_encoder.squasher.0.0.weight": (we, we, 5), "motion_encoder.squasher.0.0.bias": (we,),
            "motion_encoder.encoder_pos_embedding.pe": (5000, 1, we),
            "motion_encoder.encoder_linear_embedding.net.weight": (we, we),
            "motion_encoder.encoder_linear_embedding.net.bias": (we,),
            "motion_decoder.expander.0.0.weight": (wd, wd, 5), "motion_decoder.expander.0.0.bias": (wd,),
            "motion_decoder.decoder_pos_embedding.pe": (5000, 1, wd),
            "motion_decoder.decoder_linear_embedding.net.weight": (wd, wd),
            "motion_decoder.decoder_linear_embedding.net.bias": (wd,),
            "motion_decoder.feature_mapping_reverse.weight": (p.motion_dim, wd),
            "quantize.embedding.weight": (p.codebook_size, p.code_dim)}
    keys.update(_transformer("motion_encoder.encoder_transformer.", p.encoder))
    keys.update(_transformer("motion_decoder.decoder_transformer.", p.decoder))
    keys.update(_losses("", ["quant", "recons_exp", "recons_jaw", "total"]))
    return keys


def release_pred_shapes(cfg: LSFPaperConfig, emotion2vec) -> dict[str, tuple]:
    """framework/model/model_vqvae_pred.py VqvaePredict (+ feature_predictor/transformer_pred.py); its
    ``audio_model`` is fairseq's emotion2vec, whose key names FunASR's implementation (``emotion2vec``) shares,
    pre-training decoder included."""
    from transformers import HubertConfig, HubertModel

    hub = HubertModel(HubertConfig(**cfg.content.hubert))
    keys = {f"feature_extractor.audiomodel.{k}": tuple(v.shape) for k, v in hub.state_dict().items()}
    keys.update({f"audio_model.{k}": tuple(v.shape) for k, v in emotion2vec.state_dict().items()})
    i = cfg.identity
    dims = [i.shape_dim, *i.hidden, i.classes]
    for n, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        keys.update({f"identity_extractor.{2 * n}.weight": (b, a), f"identity_extractor.{2 * n}.bias": (b,)})
    p = cfg.predictor
    w, f, inner, fp = p.width, p.ffn, int(p.width * p.fusion_attn_ratio), "feature_predictor."
    keys.update({fp + "audio_feat.weight": (w, p.in_dim), fp + "audio_feat.bias": (w,),
                 fp + "emo_feat.weight": (w, p.in_dim), fp + "emo_feat.bias": (w,),
                 fp + "style_proj.weight": (w, i.classes),
                 fp + "squash_a.0.weight": (w, w, 5), fp + "squash_a.0.bias": (w,),
                 fp + "squash_e.0.weight": (w, w, 5), fp + "squash_e.0.bias": (w,),
                 fp + "lin_embed.net.weight": (w, w), fp + "lin_embed.net.bias": (w,),
                 fp + "pos_enc.pe": (5000, 1, w), fp + "fusion_tokens": (1, p.fusion_tokens, w),
                 fp + "out_norm.weight": (w,), fp + "out_norm.bias": (w,)})
    one = TransformerConfig(width=w, layers=1, heads=p.heads, ffn=f)
    for n in range(p.layers):
        keys.update(_transformer(f"{fp}audio_blocks.{n}.", one))
        keys.update(_transformer(f"{fp}emo_blocks.{n}.", one))
        b = f"{fp}fusion_blocks.{n}."
        for norm in ("norm_mm", "norm_a", "norm_v", "norm_mlp"):
            keys.update({f"{b}{norm}.weight": (w,), f"{b}{norm}.bias": (w,)})
        keys.update({b + "attn.q.weight": (inner, w), b + "attn.kv.weight": (2 * inner, 2 * w),
                     b + "attn.proj.weight": (w, inner), b + "attn.proj.bias": (w,),
                     b + "mlp.fc1.weight": (f, w), b + "mlp.fc1.bias": (f,),
                     b + "mlp.fc2.weight": (w, f), b + "mlp.fc2.bias": (w,)})
    keys.update({f"motion_prior.{k}": s for k, s in release_prior_shapes(cfg.prior).items()})
    keys.update(_losses("", ["latent_manifold", "recons_exp", "recons_jaw", "total"]))
    return keys


def _random_state(shapes: dict[str, tuple], gen: torch.Generator) -> OrderedDict:
    return OrderedDict((k, torch.randn(s, generator=gen) * 0.2) for k, s in shapes.items())


def _save_ckpt(path, state, name):
    torch.save({"epoch": 7, "global_step": 1234, "pytorch-lightning_version": "2.1.0", "state_dict": state,
                "hyper_parameters": {"modelname": name, "n_embed": 16, "nfeats": 53},
                "optimizer_states": [{"state": {0: {"exp_avg": torch.zeros(3)}}, "param_groups": [{"lr": 1e-4}]}],
                "lr_schedulers": []}, path)
    return path


@pytest.fixture(scope="module")
def release(tmp_path_factory, funasr_emotion2vec):
    """Fake stage-1/stage-2 checkpoints of the small config, the stage-2 prior copy equal to stage 1."""
    d = tmp_path_factory.mktemp("release")
    cfg = from_dict(LSFPaperConfig, copy.deepcopy(SMALL_OVERRIDES))
    cfg.identity.classes = 5  # the converter must read this from the checkpoint
    # and these from the emotion2vec weights: per-layer ALiBi scales, 3 extra tokens
    emotion2vec = funasr_emotion2vec({**cfg.emotion.emotion2vec, "num_extra_tokens": 3}, per_layer_alibi=True)
    gen = torch.Generator().manual_seed(1)
    s1 = _random_state(release_prior_shapes(cfg.prior), gen)
    s2 = _random_state(release_pred_shapes(cfg, emotion2vec), gen)
    s2.update({f"motion_prior.{k}": v.clone() for k, v in s1.items()})
    s2["audio_model._ema"] = OrderedDict(w=torch.zeros(2))  # fairseq's EMA teacher entry (not a tensor)
    base = from_dict(LSFPaperConfig, copy.deepcopy(SMALL_OVERRIDES))
    dump_config(base, d / "small.yaml")
    return {"dir": d, "s1": s1, "s2": s2, "base": base,
            "stage1": _save_ckpt(d / "stage1.ckpt", s1, "VQVAE Motion Autoencoder"),
            "stage2": _save_ckpt(d / "stage2.ckpt", s2, "ProbTalk3D")}


def test_convert_cli_round_trip(release, speech):
    out = release["dir"] / "paper.safetensors"
    rc = lsf_main(["convert", str(release["stage1"]), str(release["stage2"]), "-o", str(out),
                   "--config", str(release["dir"] / "small.yaml")])
    assert rc == 0 and out.is_file()
    model = load_model(out)
    assert model.config.identity.classes == 5
    e2v = model.config.emotion.emotion2vec
    assert e2v["num_extra_tokens"] == 3 and e2v["alibi_scale_per_layer"] is True
    # the reference: a fresh model filled with the mapped tensors by hand
    mapped = map_state(release["s1"], release["s2"])
    fresh = LSFPaperModel(model.config).eval()
    fresh.load_state_dict(mapped, strict=False)
    wav = torch.from_numpy(speech[:12345].copy())[None]
    ident = torch.randn(1, 300, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        y, ref = model(wav, ident), fresh(wav, ident)
    assert y.shape == (1, 20, 53)
    assert torch.equal(y, ref)
    got = model.state_dict()
    s1, s2 = release["s1"], release["s2"]
    # one hand-checked tensor per kind of rule
    pairs = {"prior.encoder.transformer.layers.0.qkv.weight":
             s1["motion_encoder.encoder_transformer.net.0.fn.fn.to_qkv.weight"],
             "prior.decoder.transformer.layers.0.ffn_norm.bias":
             s1["motion_decoder.decoder_transformer.net.1.fn.norm.bias"],
             "prior.decoder.output.weight": s1["motion_decoder.feature_mapping_reverse.weight"],
             "prior.quantizer.codebook.weight": s1["quantize.embedding.weight"],
             "predictor.audio_layers.1.ffn_in.weight": s2["feature_predictor.audio_blocks.1.net.1.fn.fn.l1.weight"],
             "predictor.emotion_layers.0.attn_out.bias": s2["feature_predictor.emo_blocks.0.net.0.fn.fn.to_out.bias"],
             "predictor.fusion_blocks.1.norm_emotion.weight": s2["feature_predictor.fusion_blocks.1.norm_v.weight"],
             "predictor.fusion_blocks.0.mlp_out.bias": s2["feature_predictor.fusion_blocks.0.mlp.fc2.bias"],
             "predictor.squash_emotion.conv.weight": s2["feature_predictor.squash_e.0.weight"],
             "identity.mlp.4.weight": s2["identity_extractor.4.weight"],
             "content_encoder.hubert.encoder.layers.2.attention.q_proj.weight":
                 s2["feature_extractor.audiomodel.encoder.layers.2.attention.q_proj.weight"],
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


def test_unknown_key_is_named(release):
    s2 = OrderedDict(release["s2"])
    s2["feature_predictor.extra_head.weight"] = torch.zeros(3)
    with pytest.raises(ConvertError, match="feature_predictor.extra_head.weight"):
        map_state(release["s1"], s2)


def test_unknown_emotion2vec_key_is_named(release, tmp_path):
    s2 = OrderedDict(release["s2"])
    s2["audio_model.modality_encoders.AUDIO.adapter.weight"] = torch.zeros(3)
    stage2 = _save_ckpt(tmp_path / "stage2_e2v.ckpt", s2, "ProbTalk3D")
    with pytest.raises(ConfigError, match=r"unexpected \['modality_encoders.AUDIO.adapter.weight'\]"):
        convert(release["stage1"], stage2, tmp_path / "x.safetensors", release["base"])


def test_missing_key_is_named(release, tmp_path):
    s2 = OrderedDict(release["s2"])
    del s2["feature_predictor.fusion_blocks.1.attn.kv.weight"]
    stage2 = _save_ckpt(tmp_path / "stage2_missing.ckpt", s2, "ProbTalk3D")
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


def test_omegaconf_hyper_parameters_are_inert_placeholders(tmp_path, monkeypatch):
    """Real Lightning checkpoints pickle hydra/OmegaConf configs: they load as placeholders, unimported."""
    import sys
    import types

    mod = types.ModuleType("omegaconf.dictconfig")

    class DictConfig(dict):
        def __reduce__(self):
            return DictConfig, (), {"_content": dict(self)}

        def __setstate__(self, state):  # only runs here, at save time; the loader never imports this module
            raise AssertionError("the checkpoint reader imported omegaconf")

    DictConfig.__module__ = "omegaconf.dictconfig"
    DictConfig.__qualname__ = "DictConfig"
    mod.DictConfig = DictConfig
    monkeypatch.setitem(sys.modules, "omegaconf", types.ModuleType("omegaconf"))
    monkeypatch.setitem(sys.modules, "omegaconf.dictconfig", mod)
    path = tmp_path / "hydra.ckpt"
    torch.save({"state_dict": {"quantize.embedding.weight": torch.ones(2, 2)},
                "hyper_parameters": DictConfig(n_embed=2)}, path)
    monkeypatch.delitem(sys.modules, "omegaconf.dictconfig")
    state = read_checkpoint(path)
    assert torch.equal(state["quantize.embedding.weight"], torch.ones(2, 2))


def _fake_sklearn_scaler(path, lo, hi, monkeypatch):
    """A pickle laid out like sklearn's MinMaxScaler (class sklearn.preprocessing._data.MinMaxScaler)."""
    import pickle
    import sys
    import types

    import numpy as np

    class MinMaxScaler:
        def __reduce_ex__(self, protocol):
            state = {"feature_range": (0, 1), "copy": True, "clip": False, "n_features_in_": len(lo),
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
