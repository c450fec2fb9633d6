"""glTF avatars as people export them (committed in test/fixtures/faces, written by make_fixtures.py): the face mesh
is found by its ARKit names, every mesh with matching targets animates, node transforms, sparse and quantized
accessors and compression are understood, unknown required extensions and viseme-only rigs are handled."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from lsf_core.face.rig import RigError, load_rig

IDENTITY = 4   # the identity the fixtures are made of


@pytest.fixture(scope="module")
def small(face_fixtures):
    """The small avatar the glTF fixtures are made of: (rig, part slices, indices in the full avatar)."""
    return face_fixtures.small_avatar(IDENTITY, face_fixtures.GLTF_STEP)


def test_eye_first_avatar_animates_head_teeth_and_eyes_in_world_space(face_files, small):
    """Kills: taking the first triangle mesh (an eye), ignoring node transforms (the head would lie on its back
    in decimetres), reading sparse targets as zeros, not scaling normalized int16, taking the viseme targets
    along, and keeping the body."""
    rig = load_rig(face_files["exported_avatar"])
    truth, parts, _ = small
    assert rig.name == "Wolf3D_Head"
    assert any("animated meshes: 'EyeLeft', 'EyeRight', 'Wolf3D_Head', 'Wolf3D_Teeth'" in n for n in rig.notes)
    assert any("carried rigidly: 'Wolf3D_Hair'" in n for n in rig.notes)
    assert any("left out (away from the face): 'Wolf3D_Body'" in n for n in rig.notes)
    assert "ARKit names matched: 52 of 52" in rig.notes
    assert "eyeBlinkLeft" in rig.blendshape_names and "eyeBlink_L" not in rig.blendshape_names
    assert len(rig.blendshape_names) == 52 and not any("viseme" in n for n in rig.blendshape_names)
    # order in the rig: EyeLeft, EyeRight, head, teeth, hair; world = the avatar lifted 1.6 m, in metres
    size = {k: sl.stop - sl.start for k, sl in parts.items()}
    sl = {"eye_left": slice(0, size["eye_left"])}
    sl["eye_right"] = slice(sl["eye_left"].stop, sl["eye_left"].stop + size["eye_right"])
    sl["head"] = slice(sl["eye_right"].stop, sl["eye_right"].stop + size["head"])
    for part in ("head", "eye_left", "eye_right"):
        np.testing.assert_allclose(rig.vertices[sl[part]], truth.vertices[parts[part]] + [0, 1.6, 0], atol=1e-5)
    k = rig.blendshape_names.index("jawOpen")
    j = truth.blendshape_names.index("jawOpen")
    np.testing.assert_allclose(rig.deltas[k, sl["head"]], truth.deltas[j, parts["head"]], atol=1e-5)
    assert np.abs(truth.deltas[j, parts["head"]]).max() > 0.01            # the jaw opens by centimetres
    teeth = slice(sl["head"].stop, sl["head"].stop + size["teeth_upper"] + size["teeth_lower"])
    lower = truth.deltas[j, parts["teeth_upper"].start:parts["teeth_lower"].stop]
    np.testing.assert_allclose(rig.deltas[k, teeth], lower, atol=1e-5)          # the lower teeth follow the jaw
    look = rig.blendshape_names.index("eyeLookInLeft")
    assert np.abs(rig.deltas[look, sl["eye_left"]]).max() > 1e-3 and not rig.deltas[look, sl["head"]].any()
    hair = slice(teeth.stop, rig.num_vertices)
    assert hair.stop - hair.start == 144 and not rig.deltas[:, hair].any()


def test_face_direction_and_identity_from_the_neutral_mesh(face_files, tmp_path, monkeypatch):
    """Kills: no identity fit (zeros), a wrong face direction (reported, or the worst start of the face search
    kept), and unit detection failing for metres."""
    from lsf_core.face.avatar import make_avatar
    from lsf_core.face.loader import open_rig

    monkeypatch.setenv("LSF_CACHE", str(tmp_path))
    rig = open_rig(face_files["exported_avatar"])
    note = next(n for n in rig.notes if n.startswith("identity fitted"))
    assert "the face looks along +Z, up is +Y, units: m" in note
    truth = [make_avatar(n).identity for n in range(9)]   # 0: the mean face (zeros)
    # face width, length and jaw width within 0.2 (zeros miss the jaw by 0.83); the closest of 9 identities
    assert np.abs(rig.identity[:3] - truth[IDENTITY][:3]).max() < 0.2, (rig.identity, truth[IDENTITY])
    assert int(np.argmin([np.abs(rig.identity - t).mean() for t in truth])) == IDENTITY


def test_compressed_files_decode_and_unknown_extensions_are_refused(face_files, small, monkeypatch):
    """Kills: ignoring KHR_draco_mesh_compression / EXT_meshopt_compression (no geometry or garbage), and not
    checking extensionsRequired."""
    truth = small[0]
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


def test_viseme_only_rig_follows_arkit_weights(face_files, small):
    """Kills: a viseme-only rig loading with no ARKit shapes (nothing moves), or a mapping that does not give
    back each viseme's own shape for its ARKit pose."""
    from lsf_core.face.viseme_rig import OCULUS_POSES, pose_matrix

    rig = load_rig(face_files["visemes"])
    assert "jawOpen" in rig.arkit_names() and "eyeBlinkLeft" not in rig.blendshape_names
    assert any("viseme-only rig" in w for w in rig.notes)
    truth = small[0]
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


def test_committed_face_files_are_what_the_generator_writes(face_files, face_fixtures, tmp_path):
    """Kills: a committed fixture edited by hand or left stale after make_fixtures.py changed (the files must stay
    reproducible). Compressed files are compared by their decoded geometry (encoders may change their bytes)."""
    fresh = face_fixtures.build_all(tmp_path)
    assert sorted(fresh) == sorted(face_files)
    for name, path in fresh.items():
        if name in ("draco", "meshopt"):
            a, b = load_rig(path), load_rig(face_files[name])
            np.testing.assert_array_equal(a.vertices, b.vertices)
            np.testing.assert_array_equal(_rolled(a.faces), _rolled(b.faces))
        else:
            assert path.read_bytes() == face_files[name].read_bytes(), f"{name}: run test/fixtures/make_fixtures.py"
    assert sum(p.stat().st_size for p in face_files.values()) < 450_000
