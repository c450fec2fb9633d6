"""The release-key rules and the converter's checks, one by one, without building a model (mutation triage of
lsf_core/models/release.py: each test names what it kills)."""
from __future__ import annotations

import pickle

import pytest
import torch
from sklearn.preprocessing import MinMaxScaler

from lsf_core.models.lsf_paper import LSFPaperConfig
from lsf_core.models.release import ConvertError, infer_config, map_key, map_state, read_checkpoint, read_scaler


def test_stacked_transformer_layers_map_two_release_modules_per_layer():
    """``net.{2i}`` is layer i's attention, ``net.{2i+1}`` its feed-forward. Kills: the pairing changed
    (divmod by 3), a single-layer stack accepting layer > 0, attention and feed-forward leaves swapped."""
    enc = "motion_encoder.encoder_transformer."
    assert map_key(enc + "net.0.fn.norm.weight") == "prior.encoder.transformer.layers.0.attn_norm.weight"
    assert map_key(enc + "net.1.fn.fn.l1.bias") == "prior.encoder.transformer.layers.0.ffn_in.bias"
    assert map_key(enc + "net.4.fn.fn.to_qkv.weight") == "prior.encoder.transformer.layers.2.qkv.weight"
    assert map_key(enc + "net.5.fn.norm.bias") == "prior.encoder.transformer.layers.2.ffn_norm.bias"
    assert map_key(enc + "net.11.fn.fn.l2.weight") == "prior.encoder.transformer.layers.5.ffn_out.weight"
    blocks = "feature_predictor.audio_blocks.3."
    assert map_key(blocks + "net.0.fn.fn.to_out.bias") == "predictor.audio_layers.3.attn_out.bias"
    assert map_key(blocks + "net.1.fn.fn.l2.weight") == "predictor.audio_layers.3.ffn_out.weight"
    assert map_key(blocks + "net.2.fn.norm.weight") is None      # one layer per block: index 2 is not ours
    assert map_key(enc + "net.0.fn.norm.running_mean") is None


def test_fusion_block_leaves_map_weights_and_biases_only():
    """Kills: the fusion rule accepting any leaf kind or any part, ``norm_mm``/``norm_mlp`` swapped."""
    f = "feature_predictor.fusion_blocks.7."
    assert map_key(f + "norm_mm.weight") == "predictor.fusion_blocks.7.norm_tokens.weight"
    assert map_key(f + "norm_mlp.bias") == "predictor.fusion_blocks.7.norm_mlp.bias"
    assert map_key(f + "mlp.fc1.weight") == "predictor.fusion_blocks.7.mlp_in.weight"
    assert map_key(f + "norm_mm.running_var") is None
    assert map_key(f + "attn.unknown.weight") is None


def _scaler(path, lo, hi, feature_range=(0, 1)):
    s = MinMaxScaler(feature_range=feature_range).fit(torch.tensor([lo, hi]).numpy())
    path.write_bytes(pickle.dumps(s, protocol=4))
    return path


def test_scaler_checks(tmp_path):
    """A real sklearn MinMaxScaler pickle reads as (lo, hi); the wrong channel count, a range other than
    (0, 1), another pickled class and a missing file are errors naming the file.
    Kills: any one of the three checks dropped (``or`` -> ``and``), the feature_range default changed."""
    lo, hi = read_scaler(_scaler(tmp_path / "jaw.pkl", [-0.1, -0.2, -0.3], [0.5, 0.6, 0.7]), 3)
    torch.testing.assert_close(lo, torch.tensor([-0.1, -0.2, -0.3]))
    assert lo.dtype == torch.float32 and hi.tolist() == pytest.approx([0.5, 0.6, 0.7])
    two = _scaler(tmp_path / "two.pkl", [0.0, 0.0], [1.0, 1.0])
    with pytest.raises(ConvertError, match=r"two.pkl: expected a MinMaxScaler to \(0, 1\) over 3 channels, got 2"):
        read_scaler(two, 3)
    wide = _scaler(tmp_path / "wide.pkl", [0.0] * 3, [1.0] * 3, feature_range=(0, 2))
    with pytest.raises(ConvertError, match=r"wide.pkl: .* feature_range \(0, 2\)"):
        read_scaler(wide, 3)
    uneven = tmp_path / "uneven.pkl"   # a damaged scaler: minima for 3 channels, maxima for 2
    uneven.write_bytes(pickle.dumps({"class": "MinMaxScaler", "data_min_": [0.0] * 3, "data_max_": [1.0] * 2}))
    with pytest.raises(ConvertError, match="uneven.pkl: expected"):
        read_scaler(uneven, 3)
    other = tmp_path / "other.pkl"
    other.write_bytes(pickle.dumps({"data_min_": [0.0] * 3, "data_max_": [1.0] * 3}, protocol=4))
    with pytest.raises(ConvertError, match="other.pkl: not a pickled sklearn MinMaxScaler"):
        read_scaler(other, 3)
    with pytest.raises(ConvertError, match="missing.pkl: cannot read the scaler"):
        read_scaler(tmp_path / "missing.pkl", 3)


def test_checkpoint_checks(tmp_path):
    """Kills: non-tensor entries let through (or dropped when not on the ignore list), a file without
    ``state_dict`` accepted, messages without the file."""
    ok = tmp_path / "ok.ckpt"
    torch.save({"state_dict": {"quantize.embedding.weight": torch.zeros(2, 2), "audio_model._ema": {"w": 1}}}, ok)
    assert list(read_checkpoint(ok)) == ["quantize.embedding.weight"]       # fairseq's EMA entry: ignored by name
    odd = tmp_path / "odd.ckpt"
    torch.save({"state_dict": {"quantize.embedding.weight": torch.zeros(2, 2), "step_count": 7}}, odd)
    with pytest.raises(ConvertError, match=r"odd.ckpt: state_dict entries that are not tensors: \['step_count'\]"):
        read_checkpoint(odd)
    flat = tmp_path / "flat.ckpt"
    torch.save({"weights": {}}, flat)
    with pytest.raises(ConvertError, match=r"flat.ckpt: not a Lightning checkpoint \(no 'state_dict' mapping\)"):
        read_checkpoint(flat)
    with pytest.raises(ConvertError, match="none.ckpt: no such checkpoint file"):
        read_checkpoint(tmp_path / "none.ckpt")


def test_map_state_checks():
    """Kills: a prior copy that differs from stage 1 accepted, the error naming the wrong stage, a key filled
    twice accepted, stage-2 keys accepted in stage 1, unknown keys not all reported."""
    s1 = {"quantize.embedding.weight": torch.ones(2, 2)}
    same = {"motion_prior.quantize.embedding.weight": torch.ones(2, 2)}
    assert set(map_state(s1, same, ("a.ckpt", "b.ckpt"))) == {"prior.quantizer.codebook.weight"}
    with pytest.raises(ConvertError, match=r"b.ckpt's frozen prior copy .* differs from a.ckpt"):
        map_state(s1, {"motion_prior.quantize.embedding.weight": torch.zeros(2, 2)}, ("a.ckpt", "b.ckpt"))
    hubert = "feature_extractor.audiomodel.encoder.pos_conv_embed.conv."
    twice = {hubert + "weight_g": torch.ones(1), hubert + "parametrizations.weight.original0": torch.ones(1)}
    with pytest.raises(ConvertError, match="already filled"):
        map_state({}, twice)
    with pytest.raises(ConvertError, match=r"1 release key\(s\) with no mapping: \['stage 1: identity_extractor"):
        map_state({"identity_extractor.0.weight": torch.ones(1)}, {})
    many = {f"nonsense.{i}": torch.ones(1) for i in range(12)}
    with pytest.raises(ConvertError, match=r"12 release key\(s\) with no mapping") as err:
        map_state({}, many)
    assert str(err.value).count("stage 2: nonsense.") == 10     # the first ten are listed


def test_infer_config_takes_only_what_the_state_fixes():
    """Sizes come from the tensors that are present; absent parts keep the base config. Kills: the presence
    checks inverted or skipped."""
    base = LSFPaperConfig()
    assert infer_config(base, {}) == base
    state = {"identity.mlp.4.weight": torch.zeros(5, 128), "predictor.fusion_tokens": torch.zeros(1, 6, 256),
             **{f"predictor.audio_layers.{i}.attn_norm.weight": torch.zeros(1) for i in range(3)},
             "prior.quantizer.codebook.weight": torch.zeros(64, 32),
             **{f"prior.encoder.transformer.layers.{i}.qkv.weight": torch.zeros(1) for i in range(2)},
             **{f"prior.decoder.transformer.layers.{i}.qkv.weight": torch.zeros(1) for i in range(4)}}
    cfg = infer_config(base, state)
    assert (cfg.identity.classes, cfg.predictor.layers, cfg.predictor.fusion_tokens) == (5, 3, 6)
    assert (cfg.prior.codebook_size, cfg.prior.code_dim) == (64, 32)
    assert (cfg.prior.encoder.layers, cfg.prior.decoder.layers) == (2, 4)
    only_identity = infer_config(base, {"identity.mlp.4.weight": torch.zeros(9, 128)})
    assert only_identity.identity.classes == 9 and only_identity.predictor == base.predictor
    assert only_identity.prior == base.prior
