"""Headless rendering: images of the avatar, MP4 with audio, PNG frames, and ``lsf render``."""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import time

import numpy as np
import pytest

from lsf_core.cli.render import add_arguments, run
from lsf_core.face.render import render_mesh, render_video


def test_render_mesh_views(rig):
    front = render_mesh(rig.vertices, rig.faces, 480, "front", rig.colors)
    assert front.shape == (480, 480, 3) and front.dtype == np.uint8
    corner = front[:20, :20].reshape(-1, 3)
    assert np.ptp(corner, axis=0).max() <= 3                      # plain background
    centre = front[200:280, 200:280].astype(int)
    assert np.abs(centre - corner.mean(0)).sum(-1).mean() > 60    # the face is there
    assert np.abs(front[:, :240].astype(int) - front[:, 240:][:, ::-1]).mean() < 25  # roughly symmetric
    three = render_mesh(rig.vertices, rig.faces, 480, "three_quarter", rig.colors)
    assert np.abs(three.astype(int) - front).mean() > 5
    plain = render_mesh(rig.vertices, rig.faces, 64)              # no colours: uniform skin
    assert plain.shape == (64, 64, 3)
    with pytest.raises(ValueError, match="faces"):
        render_mesh(rig.vertices, rig.faces + len(rig.vertices), 64)


def test_jaw_open_darkens_the_mouth(rig):
    closed = render_mesh(rig.vertices, rig.faces, 240, "front", rig.colors)
    w = rig.weights_from_named(["jawOpen"], np.array([1.0]))
    opened = render_mesh(rig.vertices + rig.offsets(w), rig.faces, 240, "front", rig.colors)
    mouth = (slice(150, 185), slice(100, 140))
    assert opened[mouth].mean() < closed[mouth].mean() - 15


def _ffprobe(path):
    out = subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-count_frames", "-of", "json", str(path)],
                         capture_output=True, text=True, check=True)
    return {s["codec_type"]: s for s in json.loads(out.stdout)["streams"]}


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed (scripts/setup.sh installs it)")
def test_lsf_render_npz_with_audio(tmp_path, rig, speech_wav):
    fps, t = 25.0, 20
    weights = np.zeros((t, len(rig.blendshape_names)), np.float32)
    weights[:, rig.blendshape_names.index("jawOpen")] = np.sin(np.linspace(0, np.pi, t)) ** 2
    npz = tmp_path / "out.npz"
    np.savez(npz, fps=np.float32(fps), times=np.arange(t) / fps, blendshapes=weights,
             blendshape_names=np.array(rig.blendshape_names), vertex_offsets=rig.offsets(weights), faces=rig.faces)
    p = argparse.ArgumentParser()
    add_arguments(p)
    mp4 = tmp_path / "clip.mp4"
    assert run(p.parse_args([str(npz), "--audio", str(speech_wav), "-o", str(mp4), "--size", "128"])) == 0
    streams = _ffprobe(mp4)
    assert streams["video"]["width"] == 128 and int(streams["video"]["nb_read_frames"]) == t
    assert "audio" in streams
    # PNG frames into a folder, from raw vertices
    frames = render_video(rig.vertices[None] + rig.offsets(weights[:3]), rig.faces, fps, tmp_path / "frames", size=64)
    assert sorted(x.name for x in frames.iterdir()) == ["frame_00000.png", "frame_00001.png", "frame_00002.png"]
    # no neutral and a vertex count that is not the default avatar's: a clear error
    bad = tmp_path / "bad.npz"
    np.savez(bad, fps=np.float32(fps), vertex_offsets=np.zeros((2, 10, 3)), faces=np.zeros((1, 3), np.int32))
    with pytest.raises(ValueError, match=r"bad.npz.*neutral"):
        run(p.parse_args([str(bad), "-o", str(tmp_path / "bad.mp4")]))


@pytest.mark.slow
def test_rendering_a_480_frame_takes_under_0_6_s(rig):
    """A wall-clock budget (about 0.1 s here): slow marker only."""
    t0 = time.perf_counter()
    for _ in range(3):
        render_mesh(rig.vertices, rig.faces, 480, "front", rig.colors, supersample=1)
    assert (time.perf_counter() - t0) / 3 < 0.6
