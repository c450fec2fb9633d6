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


def test_plain_obj_head_is_rigged_with_its_identity_and_cached(face_files, tmp_path, monkeypatch):
    """Kills: a plain mesh loading with no shapes (the old 'cannot reshape array of size 0' at every step), a
    wrong orientation or unit, identity left at zeros, and the cache not being used."""
    from lsf_core.face.loader import open_rig

    monkeypatch.setenv("LSF_CACHE", str(tmp_path))
    rig = open_rig(face_files["plain_head"])
    truth = make_avatar(IDENTITY)
    note = next(n for n in rig.notes if n.startswith("rigged automatically"))
    assert "the face looks along -Y, up is +Z, units: cm" in note, note
    true = truth.deltas @ Z_UP.T * 100
    err = np.linalg.norm((rig.deltas - true).reshape(52, -1), axis=1) / np.maximum(
        np.linalg.norm(true.reshape(52, -1), axis=1), 1e-12)
    moving = np.linalg.norm(true.reshape(52, -1), axis=1) > 0
    assert np.median(err[moving]) < 0.15, np.median(err[moving])
    assert err[rig.blendshape_names.index("jawOpen")] < 0.15
    assert np.abs(rig.identity[:2] - truth.identity[:2]).max() < 0.25, (rig.identity, truth.identity)
    again = open_rig(face_files["plain_head"])
    assert any(n.startswith("from the cache") for n in again.notes)
    np.testing.assert_array_equal(again.deltas, rig.deltas)


def test_picked_landmarks_are_used_and_checked(face_files, tmp_path, monkeypatch):
    """Kills: ignoring the landmark file beside the mesh, and accepting a landmark file that names no vertex."""
    from lsf_core.face.autorig import autorig
    from lsf_core.face.avatar import default_rig, part_slices
    from lsf_core.face.landmarks import template_landmarks
    from lsf_core.face.loader import open_rig

    monkeypatch.setenv("LSF_CACHE", str(tmp_path / "cache"))
    base = default_rig()
    marks = template_landmarks(base.vertices, part_slices()["head"])   # same topology: the same indices
    mesh = tmp_path / "head.obj"
    mesh.write_bytes(face_files["plain_head"].read_bytes())
    side = tmp_path / "head.obj.landmarks.yaml"
    side.write_text("".join(f"{k}: {marks[k]}\n" for k in ("nose_tip", "eye_left", "eye_right", "chin")))
    rig = open_rig(mesh)
    assert any("picked landmarks" in n for n in rig.notes)
    side.write_text("nose_tip: 99999999\neye_left: 1\neye_right: 2\n")
    with pytest.raises(RigError, match="head.obj.landmarks.yaml: nose_tip must be a vertex index"):
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
    """Kills: the streaming animator feeding zeros instead of the identity fitted from the neutral mesh."""
    from lsf_core.runtime.streaming import StreamConfig, StreamingAnimator

    monkeypatch.setenv("LSF_CACHE", str(tmp_path))
    anim = StreamingAnimator(StreamConfig(neutral_mesh=str(face_files["plain_head"])))
    ident = anim._identity.numpy().reshape(-1)
    np.testing.assert_allclose(ident, anim.rig.identity)
    assert np.abs(ident).max() > 0.3
