"""Sliding-window streaming of clip-based models, and the study that measures its drift from whole-clip output."""
from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lsf_core.arkit import ARKIT_NAMES
from lsf_core.cli.window_study import add_arguments, run
from lsf_core.evaluation.window_study import WindowSetting, compare, window_study
from lsf_core.models.base import SAMPLES_PER_FRAME, AnimationModel, num_frames
from lsf_core.runtime.streaming import StreamConfig, StreamingAnimator


class ClipNormModel(AnimationModel):
    """A clip-based model in miniature: frame loudness normalised over the whole clip (like InstanceNorm)
    and smoothed by a non-causal convolution, so every frame depends on the entire clip."""

    output_kind, output_names, identity_dim = "arkit", list(ARKIT_NAMES), 4

    def __init__(self):
        super().__init__()
        self.mix = torch.nn.Conv1d(1, len(ARKIT_NAMES), 9, padding=4, padding_mode="replicate")
        torch.nn.init.normal_(self.mix.weight, 0.0, 0.5)

    def forward(self, audio, identity=None):
        t = num_frames(audio.shape[1])
        x = F.pad(audio, (0, t * SAMPLES_PER_FRAME - audio.shape[1])).reshape(audio.shape[0], t, -1)
        loud = torch.log(x.pow(2).mean(-1) + 1e-6)
        z = (loud - loud.mean(1, keepdim=True)) / (loud.std(1, keepdim=True, correction=0) + 1e-3)
        return torch.sigmoid(self.mix(z.unsqueeze(1)).transpose(1, 2))


@pytest.fixture(scope="module")
def clip_model():
    torch.manual_seed(0)
    return ClipNormModel().eval()


def test_error_vanishes_when_the_window_holds_the_clip(clip_model, speech):
    audio = speech[: 2 * 16000]
    anim = StreamingAnimator(StreamConfig(rate=25.0, window=2.0, lookahead=2.0, hop=0.2, max_queue=0.0),
                             model=clip_model)
    r = compare(anim, audio, chunk=0.2)
    assert r["space"] == "vertices" and r["frames"] == num_frames(audio.size)
    assert r["relative_rms_error"] < 1e-5, r


def test_more_context_means_less_drift_and_the_cli_reports_it(clip_model, speech, tmp_path, monkeypatch):
    clips = [speech[: 3 * 16000]]
    rows = window_study(clip_model, clips, [WindowSetting(0.4, 0.0), WindowSetting(2.0, 0.4)], hop=0.2,
                        progress=False)
    short, long = (r["relative_rms_error_mean"] for r in rows)
    assert short > 0.05 and long < 0.5 * short, rows
    assert rows[1]["algorithmic_latency_ms"] == 600.0

    # the command line: settings parsing, JSON and the figure (model injected: no clip-based weights ship)
    monkeypatch.setattr("lsf_core.cli.window_study.load_or_build", lambda name: (clip_model, "test model"))
    wav = tmp_path / "clip.wav"
    import soundfile as sf

    sf.write(str(wav), clips[0], 16000)
    p = argparse.ArgumentParser()
    add_arguments(p)
    out = tmp_path / "study.json"
    assert run(p.parse_args(["--audio", str(wav), "--settings", "0.4:0,2:0.4", "--hop", "0.2", "--device", "cpu",
                             "--json", str(out), "--plot", str(tmp_path / "study.png")])) == 0
    got = json.loads(out.read_text())["rows"]
    assert [r["relative_rms_error_mean"] for r in got] == pytest.approx([short, long], rel=1e-4)
    assert (tmp_path / "study.png").stat().st_size > 10_000
    with pytest.raises(ValueError, match="WINDOW:LOOKAHEAD"):
        WindowSetting.parse("2s")


def test_sliding_window_frames_are_on_time_and_bounded(clip_model, speech):
    """The live path for clip models: every frame once, at its stamp, with bounded buffers."""
    anim = StreamingAnimator(StreamConfig(rate=30.0, window=1.0, lookahead=0.08, hop=0.04), model=clip_model)
    frames = []
    for i in range(0, speech.size, 1024):
        frames += anim.push(speech[i:i + 1024], 16000, 5.0 + i / 16000)
        assert anim._window_audio.size <= int(1.08 * 16000) + SAMPLES_PER_FRAME
    frames += anim.flush()
    stamps = np.array([f.stamp for f in frames])
    assert np.allclose(np.diff(stamps), 1 / 30.0, atol=1e-6) and abs(stamps[0] - 5.0) < 1e-6
    assert len(frames) == pytest.approx(speech.size / 16000 * 30, abs=2)
    assert anim.algorithmic_latency() == pytest.approx(0.12)


def test_paper_preset_streams_on_windows_with_a_flame_face(speech, tmp_path):
    """The published network through the live path: FLAME parameters per frame, vertices from a FLAME
    model, and the speaker's shape fitted from a neutral mesh in FLAME topology."""
    import copy

    import trimesh
    from test_flame import synthetic_flame, write_flame_pickle

    from lsf_core.face.flame import FlameModel
    from lsf_core.models.lsf_paper import SMALL_OVERRIDES
    from lsf_core.models.registry import build_model

    torch.manual_seed(0)
    model = build_model("paper", copy.deepcopy(SMALL_OVERRIDES)).eval()
    rng = np.random.default_rng(5)
    flame_path = tmp_path / "flame.pkl"
    write_flame_pickle(flame_path, synthetic_flame(rng))
    flame = FlameModel.load(flame_path)
    shape = (rng.normal(size=300) * 0.5).astype(np.float32)
    neutral = tmp_path / "speaker.obj"
    trimesh.Trimesh(flame.vertices(shape=shape), flame.faces, process=False).export(neutral)

    cfg = StreamConfig(rate=25.0, window=1.0, lookahead=0.12, hop=0.2, flame_model=str(flame_path),
                       neutral_mesh=str(neutral))
    anim = StreamingAnimator(cfg, model=model)
    assert np.allclose(anim._identity.numpy()[0], shape, atol=1e-3)   # identity: the fitted FLAME shape
    audio = speech[: 2 * 16000]
    r = compare(anim, audio, chunk=0.2)
    assert r["space"] == "vertices" and r["frames"] == 50 and np.isfinite(r["relative_rms_error"])
    frames = anim.animate(audio, 16000)
    assert frames[0].flame.shape == (53,) and frames[0].vertex_offsets.shape == (flame.num_vertices, 3)
    expected = flame.offsets(frames[10].flame, shape=shape)
    assert np.allclose(frames[10].vertex_offsets, expected, atol=1e-6)

    # a live stream starts with one 40 ms hop: shorter than the model accepts, so it is led with silence
    live = StreamingAnimator(StreamConfig(rate=25.0, window=1.0, lookahead=0.08, hop=0.04), model=model)
    pushed = [f for i in range(0, 8000, 640) for f in live.push(audio[i:i + 640], 16000, i / 16000)]
    assert len(pushed) + len(live.flush()) == 13 and all(f.flame.shape == (53,) for f in pushed)

    plain = StreamingAnimator(StreamConfig(rate=25.0, window=1.0, hop=0.2), model=model)   # no FLAME model
    assert not plain._identity.any()   # the avatar has no FLAME shape: the mean identity
    frames = plain.animate(audio, 16000)
    assert frames[0].flame.shape == (53,) and not np.abs(frames[5].vertex_offsets).any()
