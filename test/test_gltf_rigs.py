"""glTF avatars as people export them (test/fixtures/make_fixtures.py): the face mesh is found by its ARKit
names, every mesh with matching targets animates, node transforms, sparse and quantized accessors and
compression are understood, unknown required extensions and viseme-only rigs are handled."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from lsf_core.face.avatar import make_avatar, part_slices
from lsf_core.face.rig import RigError, load_rig

IDENTITY = 4   # the identity the fixtures are made of


def test_eye_first_avatar_animates_head_teeth_and_eyes_in_world_space(face_files):
    """Kills: taking the first triangle mesh (an eye), ignoring node transforms (the head would lie on its back
    in centimetres), reading sparse targets as zeros, not scaling normalized int16, and keeping the body."""
    rig = load_rig(face_files["exported_avatar"])
    truth, parts = make_avatar(IDENTITY), part_slices()
    assert rig.name == "Wolf3D_Head"
    assert any("animated meshes: 'EyeLeft', 'EyeRight', 'Wolf3D_Head', 'Wolf3D_Teeth'" in n for n in rig.notes)
    assert any("carried rigidly: 'Wolf3D_Hair'" in n for n in rig.notes)
    assert any("left out (away from the face): 'Wolf3D_Body'" in n for n in rig.notes)
    assert "ARKit names matched: 52 of 52" in rig.notes
    assert "eyeBlinkLeft" in rig.blendshape_names and "eyeBlink_L" not in rig.blendshape_names
    # order in the rig: EyeLeft, EyeRight, head, teeth, hair; world = the avatar lifted 1.6 m, in metres
    sl = {"eye_left": slice(0, 384), "eye_right": slice(384, 768)}
    n_head = parts["head"].stop - parts["head"].start
    sl["head"] = slice(768, 768 + n_head)
    np.testing.assert_allclose(rig.vertices[sl["head"]], truth.vertices[parts["head"]] + [0, 1.6, 0], atol=1e-5)
    np.testing.assert_allclose(rig.vertices[sl["eye_left"]], truth.vertices[parts["eye_left"]] + [0, 1.6, 0],
                               atol=1e-5)
    k = rig.blendshape_names.index("jawOpen")
    j = truth.blendshape_names.index("jawOpen")
    np.testing.assert_allclose(rig.deltas[k, sl["head"]], truth.deltas[j, parts["head"]], atol=1e-5)
    teeth = slice(sl["head"].stop, sl["head"].stop + 126)
    lower = truth.deltas[j, parts["teeth_upper"].start:parts["teeth_lower"].stop]
    np.testing.assert_allclose(rig.deltas[k, teeth], lower, atol=1e-5)          # the lower teeth follow the jaw
    look = rig.blendshape_names.index("eyeLookInLeft")
    assert np.abs(rig.deltas[look, sl["eye_left"]]).max() > 1e-3 and not rig.deltas[look, sl["head"]].any()
    hair = slice(teeth.stop, rig.num_vertices)
    assert hair.stop - hair.start == 144 and not rig.deltas[:, hair].any()


def test_face_direction_and_identity_from_the_neutral_mesh(face_files, tmp_path, monkeypatch):
    """Kills: no identity fit (zeros), a wrong face direction, and unit detection failing for metres."""
    from lsf_core.face.loader import open_rig

    monkeypatch.setenv("LSF_CACHE", str(tmp_path))
    rig = open_rig(face_files["exported_avatar"])
    note = next(n for n in rig.notes if n.startswith("identity fitted"))
    assert "the face looks along +Z, up is +Y, units: m" in note
    truth = make_avatar(IDENTITY).identity
    assert np.abs(rig.identity[:2] - truth[:2]).max() < 0.25, (rig.identity, truth)   # face width and length


def test_compressed_files_decode_and_unknown_extensions_are_refused(face_files, monkeypatch):
    """Kills: ignoring KHR_draco_mesh_compression / EXT_meshopt_compression (no geometry or garbage), and not
    checking extensionsRequired."""
    truth = make_avatar(IDENTITY)
    draco, meshopt = load_rig(face_files["draco"]), load_rig(face_files["meshopt"])
    np.testing.assert_allclose(draco.vertices, truth.vertices, atol=2e-5)   # Draco quantizes to 14 bits
    np.testing.assert_array_equal(draco.faces, truth.faces)
    np.testing.assert_array_equal(meshopt.vertices, truth.vertices)
    np.testing.assert_array_equal(_rolled(meshopt.faces), _rolled(truth.faces))  # the codec may rotate triangles
    with pytest.raises(RigError, match="unknown_ext.glb: requires the glTF extension EXT_made_up_compression"):
        load_rig(face_files["unknown_ext"])
    monkeypatch.setitem(sys.modules, "DracoPy", None)   # as on a machine without the decoder
    with pytest.raises(RigError, match="KHR_draco_mesh_compression; decoding it needs the Python package DracoPy"):
        load_rig(face_files["draco"])


def _rolled(faces: np.ndarray) -> np.ndarray:
    """Each triangle rotated to start at its smallest index (same winding)."""
    k = np.argmin(faces, 1)
    return np.stack([faces[np.arange(len(faces)), (k + i) % 3] for i in range(3)], 1)


def test_viseme_only_rig_follows_arkit_weights(face_files):
    """Kills: a viseme-only rig loading with no ARKit shapes (nothing moves), or a mapping that does not give
    back each viseme's own shape for its ARKit pose."""
    from lsf_core.face.viseme_rig import OCULUS_POSES, pose_matrix

    rig = load_rig(face_files["visemes"])
    assert "jawOpen" in rig.arkit_names() and "eyeBlinkLeft" not in rig.blendshape_names
    assert any("viseme-only rig" in w for w in rig.notes)
    truth = make_avatar(IDENTITY)
    poses = pose_matrix(list(OCULUS_POSES))
    errors = []
    for pose in poses.astype(np.float32):
        want = truth.offsets(pose)
        got = rig.offsets(rig.weights_from_named(list(truth.blendshape_names), pose))
        errors.append(np.linalg.norm(got - want) / np.linalg.norm(want))
    # near-alike visemes (DD, nn, kk) share a little of each other through the ridge; the rest is exact
    assert np.median(errors) < 0.03 and max(errors) < 0.15, dict(zip(OCULUS_POSES, np.round(errors, 3)))


def test_few_or_no_arkit_names(tmp_path, rng):
    """Kills: silence when a rig barely matches (3 names, no jawOpen), and a custom-named rig passing as rigged."""
    from test_rig import small_rig, write_glb

    rig = small_rig(rng)
    write_glb(tmp_path / "few.glb", rig.vertices, rig.faces, ["eyeBlink_L", "mouthSmile_R", "browInnerUp"],
              rig.deltas[:3])
    few = load_rig(tmp_path / "few.glb")
    assert few.arkit_names() == ["eyeBlinkLeft", "mouthSmileRight", "browInnerUp"]
    assert any("only 3 of the 52 ARKit names matched; no jawOpen" in w for w in few.warnings)
    write_glb(tmp_path / "custom.glb", rig.vertices, rig.faces, ["Key 1", "smile"], rig.deltas[:2])
    custom = load_rig(tmp_path / "custom.glb")
    assert custom.arkit_names() == [] and any("a plain mesh" in n for n in custom.notes)
