"""Our emotion2vec module against FunASR's implementation (the reference, from PyPI): the same random weights
loaded by name into both give the same features; fairseq-layout state dicts load strictly."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from lsf_core.config import ConfigError, from_dict
from lsf_core.models.emotion2vec import Emotion2Vec, Emotion2VecConfig
from lsf_core.models.lsf_paper import SMALL_EMOTION2VEC, SMALL_OVERRIDES, LSFPaperConfig
from lsf_core.models.registry import build_model

torch.set_num_threads(2)


def _ours(ref) -> Emotion2Vec:
    state = ref.state_dict()
    model = Emotion2Vec(from_dict(Emotion2VecConfig, Emotion2VecConfig().from_state(state)))
    model.load_fairseq_state(state)
    return model.eval()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def _clip_normed(*shape: int, seed: int = 3) -> torch.Tensor:
    wav = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    return F.layer_norm(wav, wav.shape[1:])


def test_base_size_matches_funasr(funasr_emotion2vec):
    """emotion2vec base as released (8 + 4 blocks, 768-d, 10 extra tokens, one ALiBi scale per head)."""
    ref = funasr_emotion2vec({})
    ours = _ours(ref)
    assert ours.config == Emotion2VecConfig()  # the defaults are the released sizes
    n_ours = sum(p.numel() for p in ours.parameters())
    n_ref = sum(p.numel() for n, p in ref.named_parameters() if ".decoder." not in n)
    assert n_ours == n_ref and 92e6 < n_ours < 95e6
    wav = _clip_normed(2, 2 * 16000 + 123)
    with torch.no_grad():
        want = ref.extract_features(wav, padding_mask=None)["x"]
        got = ours(wav)
        assert got.shape == want.shape == (2, ours.frames(wav.shape[1]), 768) and got.shape[1] == 100
        assert _rel(got, want) <= 1e-4
        # the comparison can fail: one perturbed ALiBi scale moves the output
        ours.modality_encoders["AUDIO"].alibi_scale[0, 0, 5] += 0.5
        assert _rel(ours(wav), want) > 1e-3


@pytest.mark.parametrize("per_layer", [False, True])
def test_small_variants_match_funasr(funasr_emotion2vec, per_layer):
    """Per-layer ALiBi scales, an even positional kernel (fairseq's SamePad trim) and the shortest inputs."""
    ref = funasr_emotion2vec(SMALL_EMOTION2VEC, per_layer_alibi=per_layer, seed=1)
    ours = _ours(ref)
    assert ours.config.alibi_scale_per_layer is per_layer
    assert ours.modality_encoders["AUDIO"].relative_positional_encoder._modules["1"].trim == 1  # kernel 8
    for samples in (ours.min_samples(), ours.min_samples() + 1, 7777, 16000):
        wav = _clip_normed(1, samples, seed=samples)
        with torch.no_grad():
            want = ref.extract_features(wav, padding_mask=None)["x"]
            got = ours(wav)
        assert got.shape == want.shape and got.shape[1] == ours.frames(samples) >= 1
        assert _rel(got, want) <= 1e-4, samples


def test_too_short_input_is_a_clear_error():
    model = Emotion2Vec(from_dict(Emotion2VecConfig, SMALL_EMOTION2VEC))
    assert model.min_samples() == 400 and model.frames(399) == 0 and model.frames(400) == 1
    with pytest.raises(ValueError, match="399 samples give no feature frame"):
        model(torch.zeros(1, 399))
    with pytest.raises(ValueError, match=r"must be \(B, samples\)"):
        model(torch.zeros(400))


def test_fairseq_state_loads_strictly(funasr_emotion2vec):
    ref = funasr_emotion2vec(SMALL_EMOTION2VEC)
    state = dict(ref.state_dict())
    assert any(k.startswith("modality_encoders.AUDIO.decoder.") for k in state)  # dropped on purpose
    state["_ema"] = torch.zeros(3)  # fairseq's EMA teacher entry: dropped on purpose
    model = Emotion2Vec(from_dict(Emotion2VecConfig, SMALL_EMOTION2VEC))
    model.load_fairseq_state(state)
    assert torch.equal(model.blocks[1].mlp.fc2.bias, ref.blocks[1].mlp.fc2.bias)

    bad = dict(state, **{"blocks.0.attn.extra.weight": torch.zeros(2)})
    with pytest.raises(ConfigError, match=r"unexpected \['blocks.0.attn.extra.weight'\]"):
        model.load_fairseq_state(bad, where="x.pt")
    bad = {k: v for k, v in state.items() if k != "modality_encoders.AUDIO.extra_tokens"}
    with pytest.raises(ConfigError, match=r"x.pt: .*missing \['modality_encoders.AUDIO.extra_tokens'\]"):
        model.load_fairseq_state(bad, where="x.pt")
    bad = dict(state, **{"blocks.0.norm1.weight": torch.zeros(65)})
    with pytest.raises(ConfigError, match=r"wrong shape \['blocks.0.norm1.weight \(65,\) vs \(64,\)'\]"):
        model.load_fairseq_state(bad)
    # the older fairseq layout of the ALiBi scales (without the layer dimension) still loads
    old = dict(state, **{"modality_encoders.AUDIO.alibi_scale": state["modality_encoders.AUDIO.alibi_scale"][0]})
    assert Emotion2VecConfig().from_state(old)["num_heads"] == 4
    model.load_fairseq_state(old)


def test_paper_preset_uses_emotion2vec():
    assert LSFPaperConfig().emotion.kind == "emotion2vec"
    model = build_model("paper", copy.deepcopy(SMALL_OVERRIDES)).eval()
    assert isinstance(model.emotion_encoder.net, Emotion2Vec)
    assert not any(p.requires_grad for p in model.emotion_encoder.parameters())
    wav = torch.randn(1, 8000, generator=torch.Generator().manual_seed(0)) * 0.1
    with torch.no_grad():
        feats = model.emotion_encoder(wav)
    assert feats.shape == (1, 24, 64) and torch.isfinite(feats).all()
    with pytest.raises(ConfigError, match="emotion.emotion2vec: unknown key"):
        build_model("paper", {**copy.deepcopy(SMALL_OVERRIDES), "emotion": {"emotion2vec": {"width": 3}}})


class _Payload:
    """Pickles as a call of os.system: must never run."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def _fake_fairseq_checkpoint(path, state, monkeypatch, hook=None):
    """A checkpoint laid out as fairseq writes emotion2vec_base.pt: the state dict under "model", the config
    an OmegaConf DictConfig holding a fairseq enum: classes of modules that are not installed (never imported
    when the file is read); ``hook`` goes into the config too."""
    import enum
    import sys
    import types

    class DictConfig(dict):
        def __reduce__(self):
            return DictConfig, (), {"_content": dict(self)}

    class Modality(enum.Enum):
        AUDIO = 1

    modules = ("omegaconf", "omegaconf.dictconfig", "examples", "examples.data2vec", "examples.data2vec.data",
               "examples.data2vec.data.modality")
    for module in modules:
        monkeypatch.setitem(sys.modules, module, types.ModuleType(module))
    for cls, module in ((DictConfig, "omegaconf.dictconfig"), (Modality, "examples.data2vec.data.modality")):
        cls.__module__, cls.__qualname__ = module, cls.__name__
        setattr(sys.modules[module], cls.__name__, cls)
    cfg = DictConfig(model=DictConfig(_name="data2vec_multi", type=Modality.AUDIO, hook=hook))
    torch.save({"args": None, "cfg": cfg, "model": state, "optimizer_history": [{"num_updates": 100000}],
                "extra_state": {"epoch": 9}}, path)
    for module in modules:
        monkeypatch.delitem(sys.modules, module)
    return path


def test_released_checkpoint_file_loads_without_running_code(funasr_emotion2vec, tmp_path, monkeypatch):
    """emotion.pretrained: a fairseq-layout emotion2vec_base.pt goes into the paper model, sizes read from it."""
    from lsf_core.models.emotion2vec import read_fairseq_checkpoint
    from lsf_core.models.registry import load_model, save_model

    ref = funasr_emotion2vec({**SMALL_EMOTION2VEC, "num_extra_tokens": 3}, per_layer_alibi=True, seed=4)
    state = dict(ref.state_dict(), _ema={"blocks.0.norm1.weight": torch.ones(64)})
    ckpt = _fake_fairseq_checkpoint(tmp_path / "emotion2vec_base.pt", state, monkeypatch)
    assert set(read_fairseq_checkpoint(ckpt)) == set(ref.state_dict())
    marker = tmp_path / "pwned"
    evil = _fake_fairseq_checkpoint(tmp_path / "evil.pt", state, monkeypatch, hook=_Payload(marker))
    with pytest.raises(ConfigError, match=r"evil.pt: not a readable torch checkpoint \(nothing in it was executed"):
        read_fairseq_checkpoint(evil)
    assert not marker.exists()

    cfg = copy.deepcopy(SMALL_OVERRIDES)
    cfg["emotion"] = {"kind": "emotion2vec", "pretrained": str(ckpt), "emotion2vec": dict(SMALL_EMOTION2VEC)}
    model = build_model("paper", cfg).eval()
    assert model.config.emotion.pretrained == ""  # the weights live in the model now
    assert model.config.emotion.emotion2vec["num_extra_tokens"] == 3
    wav = torch.randn(1, 9000, generator=torch.Generator().manual_seed(5)) * 0.1
    with torch.no_grad():
        want = ref.extract_features(F.layer_norm(wav, wav.shape[1:]), padding_mask=None)["x"]
        assert _rel(model.emotion_encoder(wav), want) <= 1e-4
        again = load_model(save_model(model, tmp_path / "paper.safetensors"))  # no need for the .pt any more
        ckpt.unlink()
        assert _rel(again.emotion_encoder(wav), want) <= 1e-4

    with pytest.raises(ConfigError, match="no such emotion2vec checkpoint"):
        build_model("paper", cfg)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match=r"junk.pt: not a readable torch checkpoint"):
        read_fairseq_checkpoint(junk)
    torch.save({"state_dict": {}}, tmp_path / "lightning.pt")
    with pytest.raises(ConfigError, match=r"lightning.pt: not a fairseq checkpoint \(no 'model' state dict\)"):
        read_fairseq_checkpoint(tmp_path / "lightning.pt")
