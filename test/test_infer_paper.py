"""Offline inference with the paper preset (reduced config, random weights): batches of clips of any rate,
channel count and length, and ``lsf infer --identity`` with a FLAME model."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from lsf_core.audio import load_audio, resample
from lsf_core.cli.main import main
from lsf_core.models.base import num_frames
from lsf_core.models.lsf_paper import SMALL_OVERRIDES
from lsf_core.models.registry import build_model, save_model
from lsf_core.runtime.infer import infer_batch, load_identity


@pytest.fixture(scope="module")
def paper():
    torch.manual_seed(0)
    return build_model("paper", SMALL_OVERRIDES).eval()


def test_batch_matches_single_clips_across_rates_and_channels(paper, speech_wav):
    torch.set_num_threads(1)
    speech = load_audio(speech_wav)
    short = speech[:16000 * 7 // 10]
    stereo = np.stack([resample(short, 16000, 44100)] * 2, axis=1)  # (S, 2) at 44.1 kHz
    ident = np.random.default_rng(1).normal(size=300).astype(np.float32)
    outs = infer_batch(paper, [speech, stereo], [ident, None], [16000, 44100])
    # the network's own frames (the release's floor(T50 / 2)), not the padded grid
    assert [o.shape for o in outs] == [(paper.clip_frames(speech.size), 53), (paper.clip_frames(short.size), 53)]
    assert paper.clip_frames(speech.size) < num_frames(speech.size)
    alone = infer_batch(paper, [speech], [ident])[0]
    np.testing.assert_allclose(outs[0], alone, atol=1e-4)
    # the identity changes the output, and the mean identity is the default
    assert not np.allclose(alone, infer_batch(paper, [speech])[0], atol=1e-4)
    with pytest.raises(ValueError, match="2 clips, 1 rates"):
        infer_batch(paper, [speech, short], rates=[16000])


def test_cli_identity_with_flame_gives_vertices(paper, speech_wav, tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from test_flame import synthetic_flame, write_flame_pickle

    from lsf_core.face.flame import FlameModel

    model_file = save_model(paper, tmp_path / "paper_small.safetensors")
    flame_file = tmp_path / "flame.pkl"
    write_flame_pickle(flame_file, synthetic_flame(np.random.default_rng(2)))
    shape = np.random.default_rng(3).normal(size=300).astype(np.float32)
    np.save(tmp_path / "shape.npy", shape)
    wav = tmp_path / "speech_8k.wav"
    sf.write(wav, resample(load_audio(speech_wav), 16000, 8000), 8000)
    out = tmp_path / "out.npz"
    assert main(["infer", str(wav), "-o", str(out), "--model", str(model_file), "--flame-model", str(flame_file),
                 "--identity", str(tmp_path / "shape.npy")]) == 0
    z = np.load(out)
    frames = paper.clip_frames(sf.info(wav).frames * 2)
    flame = FlameModel.load(flame_file)
    assert z["flame"].shape == (frames, 53) and z["times"].shape == (frames,) and float(z["fps"]) == 25
    assert z["vertex_offsets"].shape == (frames, flame.num_vertices, 3)
    np.testing.assert_allclose(z["neutral"], flame.vertices(shape=shape), atol=1e-6)
    posed = flame.vertices(shape=shape, expression=z["flame"][:, :50], jaw=z["flame"][:, 50:])
    np.testing.assert_allclose(z["neutral"] + z["vertex_offsets"], posed, atol=1e-5)
    # without --identity a FLAME model still runs as released, on the mean identity. Kills: lsf infer sending
    # FLAME models through the streaming engine (voice gate, ceil frame grid) by default
    assert main(["infer", str(wav), "-o", str(tmp_path / "m.npz"), "--model", str(model_file)]) == 0
    mean = np.load(tmp_path / "m.npz")
    expected = infer_batch(paper, [load_audio(wav, 16000)])[0]
    assert mean["flame"].shape == (frames, 53)
    np.testing.assert_allclose(mean["flame"], expected, atol=1e-5)
    # at another rate it runs through the streaming engine (the node's code): the num_frames grid at that rate,
    # with the same keys (lsf render reads either)
    assert main(["infer", str(wav), "-o", str(tmp_path / "s.npz"), "--model", str(model_file),
                 "--flame-model", str(flame_file), "--rate", "50"]) == 0
    streamed = np.load(tmp_path / "s.npz")
    assert set(streamed.files) == set(z.files)
    assert streamed["flame"].shape == (-(-sf.info(wav).frames * 2 // 320), 53)   # every 20 ms before the end


def test_sampling_options_are_checked(paper, speech_wav, tmp_path, capsys):
    """``--sample-temperature``/``--seed`` on a model without a codebook, ``--seed`` alone, a temperature <= 0:
    exit 1 with one line naming the option."""
    model_file = save_model(paper, tmp_path / "paper_small.safetensors")
    out = str(tmp_path / "x.npz")
    assert main(["infer", str(speech_wav), "-o", out, "--model", "realtime", "--sample-temperature", "0.2"]) == 1
    assert "no codebook" in capsys.readouterr().err
    assert main(["infer", str(speech_wav), "-o", out, "--model", str(model_file), "--seed", "3"]) == 1
    assert "--seed only applies to sampled codes" in capsys.readouterr().err
    assert main(["infer", str(speech_wav), "-o", out, "--model", str(model_file),
                 "--sample-temperature", "0"]) == 1
    assert "temperature must be > 0" in capsys.readouterr().err


def test_bad_identity_file_is_named(tmp_path):
    np.save(tmp_path / "long.npy", np.zeros(400))
    with pytest.raises(ValueError, match="long.npy: expected 1..300"):
        load_identity(tmp_path / "long.npy", 300)
    (tmp_path / "junk.npy").write_text("not numpy")
    with pytest.raises(ValueError, match="junk.npy: cannot read"):
        load_identity(tmp_path / "junk.npy", 300)
