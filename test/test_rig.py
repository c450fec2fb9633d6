"""Rig files (NPZ, OBJ + blendshape OBJs, PLY, GLB morph targets) and weights <-> offsets."""
from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from lsf_core.face.rig import Rig, RigError, load_rig, save_rig, write_obj


def small_rig(rng) -> Rig:
    v = rng.normal(scale=0.05, size=(30, 3)).astype(np.float32)
    f = np.array([[i, i + 1, i + 2] for i in range(28)], np.int32)
    deltas = rng.normal(scale=0.01, size=(4, 30, 3)).astype(np.float32)
    deltas[3] = 0  # a declared but unrigged shape
    return Rig("small", v, f, ["jawOpen", "eyeBlink_L", "myCustomShape", "tongueOut"], deltas,
               np.zeros(0, np.float32), {"lips": np.arange(5)})


def test_names_are_canonical_and_named_weights_map(rng):
    rig = small_rig(rng)
    assert rig.blendshape_names == ["jawOpen", "eyeBlinkLeft", "myCustomShape", "tongueOut"]
    w = rig.weights_from_named(["eyeBlinkLeft", "JawOpen", "unknownShape"], np.array([[0.2, 0.7, 1.0]]))
    np.testing.assert_allclose(w, [[0.7, 0.2, 0.0, 0.0]])


def test_offsets_round_trip_with_bounds(rng):
    rig = small_rig(rng)
    w = np.array([[0.3, 0.9, 0.1, 0.0], [1.0, 0.0, 0.5, 0.0]], np.float32)
    off = rig.offsets(w)
    assert off.shape == (2, 30, 3) and off.dtype == np.float32
    np.testing.assert_allclose(rig.weights_from_offsets(off), w, atol=1e-4)
    # out-of-range targets are clipped to the box [0, 1], not extrapolated
    target = rig.offsets(np.array([1.6, -0.5, 0.4, 0.0], np.float32))
    over = rig.weights_from_offsets(target)
    assert over.min() >= 0 and over.max() <= 1 and over[0] == 1.0 and over[1] == 0.0
    from scipy.optimize import lsq_linear

    ref = lsq_linear(rig.deltas.reshape(4, -1).T.astype(np.float64), target.reshape(-1), bounds=(0, 1)).x
    np.testing.assert_allclose(over[:3], ref[:3], atol=1e-3)  # the all-zero shape gets 0 (ridge)
    assert over[3] == 0
    with pytest.raises(ValueError, match="K=4"):
        rig.offsets(np.zeros(3))


def test_npz_round_trip(tmp_path, rng):
    rig = small_rig(rng)
    path = save_rig(rig, tmp_path / "r.npz")
    with np.load(path, allow_pickle=False) as z:
        assert set(z.files) >= {"vertices", "faces", "blendshape_names", "deltas", "identity", "region_lips"}
    back = load_rig(path)
    assert back.blendshape_names == rig.blendshape_names and back.name == "small"
    np.testing.assert_array_equal(back.deltas, rig.deltas)
    np.testing.assert_array_equal(back.regions["lips"], np.arange(5))


def test_obj_with_blendshape_folder_and_ply(tmp_path, rng):
    rig = small_rig(rng)
    neutral = write_obj(tmp_path / "face.obj", rig.vertices, rig.faces)
    for name, d in zip(("jawOpen", "mouthSmile_L"), rig.deltas[:2], strict=True):
        write_obj(tmp_path / "face_blendshapes" / f"{name}.obj", rig.vertices + d, rig.faces)
    back = load_rig(neutral)
    assert back.blendshape_names == ["jawOpen", "mouthSmileLeft"]
    np.testing.assert_allclose(back.deltas, rig.deltas[:2], atol=2e-6)
    np.testing.assert_array_equal(back.faces, rig.faces)
    import trimesh

    trimesh.Trimesh(rig.vertices, rig.faces, process=False).export(tmp_path / "face.ply")
    ply = load_rig(tmp_path / "face.ply")
    np.testing.assert_allclose(ply.vertices, rig.vertices, atol=1e-6)
    assert ply.blendshape_names == back.blendshape_names  # same stem: same blendshape folder


def write_glb(path, vertices, faces, names, deltas) -> None:
    """A minimal binary glTF: one mesh, indices, POSITION and one morph target per shape."""
    blobs = [faces.astype(np.uint32).tobytes(), vertices.astype(np.float32).tobytes()]
    blobs += [d.astype(np.float32).tobytes() for d in deltas]
    views, accessors, offset = [], [], 0
    for i, b in enumerate(blobs):
        views.append({"buffer": 0, "byteOffset": offset, "byteLength": len(b)})
        if i == 0:
            accessors.append({"bufferView": 0, "componentType": 5125, "count": faces.size, "type": "SCALAR"})
        else:
            accessors.append({"bufferView": i, "componentType": 5126, "count": len(vertices), "type": "VEC3",
                              "min": [-1, -1, -1], "max": [1, 1, 1]})
        offset += len(b)
    doc = {"asset": {"version": "2.0"}, "buffers": [{"byteLength": offset}], "bufferViews": views,
           "accessors": accessors,
           "meshes": [{"name": "face", "extras": {"targetNames": names}, "primitives": [{
               "attributes": {"POSITION": 1}, "indices": 0,
               "targets": [{"POSITION": 2 + k} for k in range(len(names))]}]}]}
    js = json.dumps(doc).encode()
    js += b" " * (-len(js) % 4)
    binary = b"".join(blobs)
    binary += b"\0" * (-len(binary) % 4)
    total = 12 + 8 + len(js) + 8 + len(binary)
    path.write_bytes(struct.pack("<4sII", b"glTF", 2, total) + struct.pack("<II", len(js), 0x4E4F534A) + js
                     + struct.pack("<II", len(binary), 0x004E4942) + binary)


def test_glb_morph_targets(tmp_path, rng):
    rig = small_rig(rng)
    path = tmp_path / "face.glb"
    write_glb(path, rig.vertices, rig.faces, ["jawOpen", "eyeBlink_L"], rig.deltas[:2])
    back = load_rig(path)
    assert back.blendshape_names == ["jawOpen", "eyeBlinkLeft"] and back.name == "face"
    np.testing.assert_allclose(back.deltas, rig.deltas[:2])
    np.testing.assert_array_equal(back.faces, rig.faces)
    trunc = tmp_path / "trunc.glb"
    trunc.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(RigError, match="trunc.glb.*truncated"):
        load_rig(trunc)


def test_bad_files_are_named(tmp_path, rng):
    with pytest.raises(RigError, match="missing.npz.*does not exist"):
        load_rig(tmp_path / "missing.npz")
    rig = small_rig(rng)
    good = save_rig(rig, tmp_path / "good.npz")
    trunc = tmp_path / "trunc.npz"
    trunc.write_bytes(good.read_bytes()[:300])
    with pytest.raises(RigError, match="trunc.npz"):
        load_rig(trunc)
    np.savez(tmp_path / "shapes.npz", vertices=rig.vertices, faces=rig.faces, blendshape_names=np.array(["a"]),
             deltas=np.zeros((1, 7, 3)))
    with pytest.raises(RigError, match=r"shapes.npz.*deltas must be"):
        load_rig(tmp_path / "shapes.npz")
    (tmp_path / "bad.obj").write_text("v 0 0 0\nv 1 0 0\nf 1 2 9\n")
    with pytest.raises(RigError, match="bad.obj.*out of range"):
        load_rig(tmp_path / "bad.obj")
    (tmp_path / "x.fbx").write_text("")
    with pytest.raises(RigError, match="unknown format"):
        load_rig(tmp_path / "x.fbx")
