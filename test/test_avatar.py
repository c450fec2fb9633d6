"""The procedural default avatar: size, determinism, identities, and that its shapes move the right parts."""
from __future__ import annotations

import argparse
import time

import numpy as np
import pytest

from lsf_core.arkit import ARKIT_NAMES
from lsf_core.cli.avatar import add_arguments, run
from lsf_core.face.avatar import IDENTITY_DIM, make_avatar

RIGGED = ["jawOpen", "mouthClose", "mouthFunnel", "mouthPucker", "mouthSmileLeft", "mouthSmileRight",
          "mouthStretchLeft", "mouthStretchRight", "mouthRollLower", "mouthRollUpper", "mouthPressLeft",
          "mouthPressRight", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthUpperUpLeft", "mouthUpperUpRight",
          "mouthFrownLeft", "mouthFrownRight", "cheekPuff", "browInnerUp", "browDownLeft", "browDownRight",
          "browOuterUpLeft", "browOuterUpRight", "eyeBlinkLeft", "eyeBlinkRight"]


def delta(rig, name):
    return rig.deltas[rig.blendshape_names.index(name)]


@pytest.mark.slow
def test_building_an_avatar_takes_under_two_seconds():
    """A wall-clock budget: slow marker only (a busy CI machine must not fail the suite)."""
    t0 = time.perf_counter()
    make_avatar(None)
    assert time.perf_counter() - t0 < 2.0


def test_size_units_names(rig):
    fresh = make_avatar(None)
    assert 3000 <= rig.num_vertices <= 8000
    assert rig.blendshape_names == list(ARKIT_NAMES)
    height = np.ptp(rig.vertices[:, 1])
    assert 0.2 < height < 0.35  # head ~0.23 m plus a short neck, metres
    for name in RIGGED:
        assert np.abs(delta(rig, name)).max() > 1e-3, name
    assert {"lips", "upper_face", "jaw", "eyes"} <= set(rig.regions)
    assert rig.colors is not None and rig.colors.shape == rig.vertices.shape
    np.testing.assert_array_equal(fresh.vertices, rig.vertices)  # deterministic
    np.testing.assert_array_equal(fresh.deltas, rig.deltas)
    assert rig.identity.shape == (IDENTITY_DIM,) and not rig.identity.any()


def test_identities(rig):
    a, b = make_avatar(1), make_avatar(1)
    np.testing.assert_array_equal(a.vertices, b.vertices)
    c = make_avatar(2)
    assert a.faces.shape == c.faces.shape == rig.faces.shape and np.array_equal(a.faces, rig.faces)
    assert np.abs(a.vertices - c.vertices).max() > 2e-3
    assert np.abs(a.identity - c.identity).max() > 0.05
    wide = make_avatar(np.eye(IDENTITY_DIM)[0])            # face_width +1
    assert np.ptp(wide.vertices[:, 0]) > np.ptp(rig.vertices[:, 0]) * 1.04
    assert not np.allclose(delta(a, "jawOpen"), delta(rig, "jawOpen"))  # shapes follow the identity
    with pytest.raises(ValueError, match="shape coefficients"):
        make_avatar(np.zeros(3))


def test_jaw_opens_the_mouth(rig):
    lips = rig.regions["lips"]
    v = rig.vertices
    jaw = delta(rig, "jawOpen")
    lower = lips[v[lips, 1] < -0.062]
    upper = lips[(v[lips, 1] > -0.058) & (np.abs(v[lips, 0]) < 0.02)]
    assert jaw[lower, 1].mean() < -0.008 and np.abs(jaw[upper]).max() < 1e-3
    chin = np.argmax(v[:, 2] - 10 * (v[:, 1] > -0.085) - 10 * (np.abs(v[:, 0]) > 0.01))
    assert jaw[chin, 1] < -0.01
    assert np.abs(jaw[rig.regions["upper_face"]]).max() < 1e-6 and np.abs(jaw[rig.regions["eyes"]]).max() == 0
    # the slit: coincident lip vertices at rest separate when the jaw opens
    opened = v + jaw
    _, inverse, counts = np.unique(v[lips], axis=0, return_inverse=True, return_counts=True)
    twins = [np.nonzero(inverse.reshape(-1) == k)[0] for k in np.nonzero(counts == 2)[0]]
    pairs = np.array(twins)
    assert len(pairs) >= 10
    gaps = np.linalg.norm(opened[lips[pairs[:, 0]]] - opened[lips[pairs[:, 1]]], axis=1)
    assert gaps.max() > 0.015
    # mouthClose brings the lips back together over an open jaw
    closed = opened + delta(rig, "mouthClose")
    gaps_closed = np.linalg.norm(closed[lips[pairs[:, 0]]] - closed[lips[pairs[:, 1]]], axis=1)
    assert gaps_closed.max() < 0.3 * gaps.max()


def test_sided_shapes_act_on_their_side(rig):
    v = rig.vertices
    for name, sign in (("mouthSmileLeft", 1), ("mouthSmileRight", -1)):
        d = delta(rig, name)
        moved = np.linalg.norm(d, axis=1) > 1e-3
        assert np.all(np.sign(v[moved, 0]) == sign) or (v[moved, 0] * sign).min() > -0.01
        corner = np.argmax(np.linalg.norm(d, axis=1))
        assert d[corner, 1] > 0.004  # corner goes up
    blink = delta(rig, "eyeBlinkLeft")
    assert (v[np.abs(blink).max(1) > 1e-4, 0] > 0).all()
    assert delta(rig, "browInnerUp")[:, 1].max() > 0.004 and delta(rig, "browDownLeft")[:, 1].min() < -0.004


def test_blink_covers_the_eyeball(rig):
    """Lid vertices in front of the eyeball after a full blink, behind it (eye open) at rest."""
    eye = rig.regions["eyes"]
    left = rig.vertices[eye[rig.vertices[eye, 0] > 0]]
    centre, radius = (left.max(0) + left.min(0)) / 2, np.ptp(left[:, 0]) / 2
    v = rig.vertices
    r2 = (v[:, 0] - centre[0]) ** 2 + (v[:, 1] - centre[1]) ** 2
    near = (r2 < (radius * 0.5) ** 2) & (v[:, 2] > centre[2])
    near[eye] = False
    assert near.sum() >= 10
    ball_z = centre[2] + np.sqrt(radius ** 2 - r2[near])
    assert (v[near, 2] < ball_z).mean() > 0.9
    closed = v + delta(rig, "eyeBlinkLeft")
    assert (closed[near, 2] > ball_z).mean() > 0.9


def test_lsf_avatar_command(tmp_path):
    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args(["-o", str(tmp_path), "--identities", "0", "5", "--expressions", "neutral", "jaw_open",
                         "--size", "96"])
    assert run(args) == 0
    assert (tmp_path / "avatar_id0.npz").is_file() and (tmp_path / "avatar_id5.obj").is_file()
    pngs = sorted(x.name for x in tmp_path.glob("*.png"))
    assert pngs == ["id0_jaw_open_front.png", "id0_jaw_open_three_quarter.png", "id0_neutral_front.png",
                    "id0_neutral_three_quarter.png", "id5_neutral_front.png", "id5_neutral_three_quarter.png"]
    from lsf_core.face.rig import load_rig

    back = load_rig(tmp_path / "avatar_id5.npz")
    np.testing.assert_allclose(back.vertices, make_avatar(5).vertices)
    obj = load_rig(tmp_path / "avatar_id0.obj")
    assert obj.num_vertices == back.num_vertices
