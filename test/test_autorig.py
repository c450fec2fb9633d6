"""A plain neutral mesh (no blendshapes) is rigged automatically; what cannot be animated is refused at start-up."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lsf_core.face.avatar import make_avatar
from lsf_core.face.rig import RigError

REPO = Path(__file__).resolve().parents[1]
IDENTITY = 4
Z_UP = np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])


def test_deformation_transfer_follows_the_target_geometry(rng):
    """Kills: copying the source deltas unchanged (a larger head must move further)."""
    from lsf_core.face.autorig import deformation_transfer

    rig = make_avatar(None)
    jaw = rig.deltas[[rig.blendshape_names.index("jawOpen")]]
    same = deformation_transfer(rig.vertices, rig.faces, jaw, rig.vertices)
    assert np.linalg.norm(same - jaw) < 0.03 * np.linalg.norm(jaw)   # exact but for degenerate triangles
    bigger = deformation_transfer(rig.vertices, rig.faces, jaw, rig.vertices * 1.2)   # a 20 % larger head
    # opens further, much closer to 1.2x than a plain copy (the weak pull to place parts keeps it from exact)
    assert np.linalg.norm(bigger - 1.2 * jaw) < 0.7 * np.linalg.norm(jaw - 1.2 * jaw)


@pytest.fixture(scope="module")
def small(face_fixtures):
    """The small avatar the plain OBJ head is made of: (rig, part slices, indices in the full avatar)."""
    return face_fixtures.small_avatar(IDENTITY, face_fixtures.OBJ_STEP)


def test_plain_obj_head_is_rigged_with_its_identity_and_cached(face_files, small, tmp_path, monkeypatch):
    """Kills: a plain mesh loading with no shapes (the old 'cannot reshape array of size 0' at every step), a
    wrong orientation or unit, identity left at zeros, the cache not being written or not being used, and the
    face search keeping its first start or its worst fit (on this short-nosed head the chin sticks out more than
    the nose: the fit is refused)."""
    import lsf_core.face.autorig
    from lsf_core.face.loader import open_rig

    monkeypatch.setenv("LSF_CACHE", str(tmp_path))
    rig = open_rig(face_files["plain_head"])
    truth = small[0]
    note = next(n for n in rig.notes if n.startswith("rigged automatically"))
    assert "the face looks along -Y, up is +Z, units: cm" in note, note
    true = truth.deltas @ Z_UP.T * 100                      # the file is Z-up, in centimetres
    norm = np.linalg.norm(true.reshape(52, -1), axis=1)
    err = np.linalg.norm((rig.deltas - true).reshape(52, -1), axis=1) / np.maximum(norm, 1e-12)
    assert np.median(err[norm > 0]) < 0.10, np.median(err[norm > 0])   # 6 % here; metres or Y-up: > 90 %
    assert err[rig.blendshape_names.index("jawOpen")] < 0.10
    # face width, length and jaw width within 0.15 (zeros miss the jaw by 0.83), all 12 within 0.2 on average
    assert np.abs(rig.identity[:3] - truth.identity[:3]).max() < 0.15, (rig.identity, truth.identity)
    assert np.abs(rig.identity - truth.identity).mean() < 0.2, (rig.identity, truth.identity)
    assert len(list((tmp_path / "rigs").glob("plain_head-*.npz"))) == 1

    def rig_again(*args, **kwargs):
        raise AssertionError("rigged again instead of loading the cached rig")

    monkeypatch.setattr(lsf_core.face.autorig, "autorig", rig_again)
    again = open_rig(face_files["plain_head"])
    assert any(n.startswith("from the cache") for n in again.notes)
    np.testing.assert_array_equal(again.deltas, rig.deltas)
    np.testing.assert_array_equal(again.identity, rig.identity)


def test_picked_landmarks_are_used_and_checked(face_files, small, tmp_path, monkeypatch):
    """Kills: ignoring the landmark file beside the mesh, and accepting a landmark file that names no vertex."""
    from lsf_core.face.autorig import autorig
    from lsf_core.face.avatar import default_rig, part_slices
    from lsf_core.face.landmarks import template_landmarks
    from lsf_core.face.loader import open_rig

    monkeypatch.setenv("LSF_CACHE", str(tmp_path / "cache"))
    marks = template_landmarks(default_rig().vertices, part_slices()["head"])
    full, keep = make_avatar(IDENTITY), small[2]
    # the small head's vertex closest to each of the avatar's landmark vertices
    picked = {k: int(np.argmin(np.linalg.norm(full.vertices[keep] - full.vertices[marks[k]], axis=1)))
              for k in ("nose_tip", "eye_left", "eye_right", "chin")}
    mesh = tmp_path / "head.obj"
    mesh.write_bytes(face_files["plain_head"].read_bytes())
    side = tmp_path / "head.obj.landmarks.yaml"
    side.write_text("".join(f"{k}: {i}\n" for k, i in picked.items()))
    rig = open_rig(mesh)
    note = next(n for n in rig.notes if n.startswith("rigged automatically"))
    assert "picked landmarks" in note and "the face looks along -Y, up is +Z, units: cm" in note, note
    side.write_text(f"nose_tip: {rig.num_vertices}\neye_left: 1\neye_right: 2\n")
    bad = f"head.obj.landmarks.yaml: nose_tip must be a vertex index 0..{rig.num_vertices - 1}, got {rig.num_vertices}"
    with pytest.raises(RigError, match=bad):
        open_rig(mesh)
    with pytest.raises(Exception, match="too few"):
        autorig(np.zeros((3, 3)), np.array([[0, 1, 2]]))


def test_a_mesh_that_cannot_be_animated_is_refused_by_the_cli(face_files, tmp_path, speech_wav):
    """Kills: a sphere (no face, no shapes) reaching the animation loop, and a traceback instead of one line."""
    env = {"PYTHONPATH": str(REPO), "LSF_CACHE": str(tmp_path), "PATH": "/usr/bin:/bin"}
    sphere = str(face_files["not_a_face"])
    for args in (["infer", str(speech_wav), "-o", str(tmp_path / "o.npz"), "--neutral-mesh", sphere],
                 ["rig", sphere, "-o", str(tmp_path / "r.npz")]):
        proc = subprocess.run([sys.executable, "-m", "lsf_core.cli.main", *args], capture_output=True, text=True,
                              env=env, timeout=300)
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr
        lines = [ln for ln in proc.stderr.splitlines() if "error" in ln]
        assert len(lines) == 1 and "not_a_face.obj: has no ARKit or viseme blendshapes and could not be rigged" \
            in lines[0], proc.stderr


def test_the_node_refuses_it_at_start_up(face_files, tmp_path, ros_env):
    """Kills: a running node that fails every step instead of a parameter error and a non-zero exit."""
    env = dict(ros_env, LSF_CACHE=str(tmp_path))
    proc = subprocess.run([sys.executable, "-m", "lsf_ros.animator_node", "--ros-args", "-p",
                           f"neutral_mesh:={face_files['not_a_face']}"], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert f"parameter neutral_mesh={str(face_files['not_a_face'])!r}" in proc.stderr
    assert "could not be rigged automatically" in proc.stderr and "Traceback" not in proc.stderr


def test_identity_reaches_the_model(face_files, tmp_path, monkeypatch):
    """Kills: the streaming animator feeding the model zeros (or anything else) instead of the identity fitted
    from the neutral mesh, at warm-up or on live audio."""
    from lsf_core.models.registry import load_model
    from lsf_core.runtime.streaming import StreamConfig, StreamingAnimator

    monkeypatch.setenv("LSF_CACHE", str(tmp_path))
    model = load_model(StreamConfig().model)
    seen, forward = [], model.forward_stream

    def recording(audio, state, identity):   # the real model, its identity input recorded
        seen.append(identity.detach().cpu().numpy().reshape(-1).copy())
        return forward(audio, state, identity)

    monkeypatch.setattr(model, "forward_stream", recording)
    anim = StreamingAnimator(StreamConfig(neutral_mesh=str(face_files["plain_head"])), model=model)
    assert np.abs(anim.rig.identity).max() > 0.3 and anim.rig.identity.shape == (12,)
    warm = len(seen)
    frames = anim.push(np.random.default_rng(0).normal(0, 0.1, 8000).astype(np.float32), 16000, 0.0)
    assert warm > 0 and len(seen) > warm and frames
    np.testing.assert_array_equal(np.stack(seen), np.tile(anim.rig.identity, (len(seen), 1)))
