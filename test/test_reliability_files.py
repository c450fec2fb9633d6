"""Files are untrusted: every model, rig, retarget and FLAME file that is missing, truncated, of the wrong
shape or topology, or crafted to run code, is a clear error naming the file and the problem, and runs nothing.
The animator node turns the same errors into a startup error naming the parameter."""
from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from lsf_core.config import ConfigError
from lsf_core.face.retarget import Retargeter, load_retarget_map
from lsf_core.face.rig import Rig, RigError, load_rig, save_rig, write_obj
from lsf_core.models.registry import ModelFileError, build_model, load_model, save_model

REPO = Path(__file__).resolve().parents[1]


class _RunsCode:
    """Pickles to ``os.system("touch <marker>")``: loading it with plain pickle would create the marker."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture()
def marker(tmp_path) -> Path:
    m = tmp_path / "code_ran"
    yield m
    assert not m.exists(), "a file made the loader run code"


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return save_model(build_model("realtime"), tmp_path_factory.mktemp("m") / "good.safetensors")


def _small_rig() -> Rig:
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]], np.float32) * 0.05
    d = np.zeros((2, 4, 3), np.float32)
    d[0, 0, 2], d[1, 3, 2] = 0.01, 0.01
    return Rig("small", v, np.array([[0, 1, 2], [1, 3, 2]]), ["jawOpen", "mouthClose"], d, np.zeros(0))


def test_model_files(tmp_path, model_file, marker):
    cases = {}
    cases["missing"] = (tmp_path / "missing.safetensors", "no such model file")
    trunc = tmp_path / "truncated.safetensors"
    trunc.write_bytes(model_file.read_bytes()[: model_file.stat().st_size // 2])
    cases["truncated"] = (trunc, "not a readable .safetensors")
    evil = tmp_path / "evil.safetensors"
    evil.write_bytes(pickle.dumps({"w": _RunsCode(marker)}))
    cases["pickle named .safetensors"] = (evil, "not a readable .safetensors")
    evil_pt = tmp_path / "evil.pt"   # a torch checkpoint (pickle inside) is never unpickled either
    torch.save({"w": _RunsCode(marker)}, evil_pt)
    cases["torch checkpoint"] = (evil_pt, "not a readable .safetensors")
    good = build_model("realtime")
    meta = {"lsf_config": "!!python/object/apply:os.system ['touch " + str(marker) + "']"}
    yaml_evil = tmp_path / "yaml_evil.safetensors"
    save_file({k: v.contiguous() for k, v in good.state_dict().items()}, str(yaml_evil), metadata=meta)
    cases["config with a python tag"] = (yaml_evil, "not valid YAML")
    state = {k: v.contiguous() for k, v in good.state_dict().items()}
    key = next(k for k in state if k.endswith("weight") and state[k].ndim == 2)
    state[key] = torch.zeros(3, 3)
    wrong = tmp_path / "wrong_shape.safetensors"
    from lsf_core.config import dump_config

    save_file(state, str(wrong), metadata={"lsf_config": dump_config(good.config)})
    cases["wrong shape"] = (wrong, f"wrong shape \\['{re.escape(key)} \\(3, 3\\) vs")
    del state[key]
    missing_key = tmp_path / "missing_tensor.safetensors"
    save_file(state, str(missing_key), metadata={"lsf_config": dump_config(good.config)})
    cases["missing tensor"] = (missing_key, f"missing \\['{key}'\\]")
    nometa = tmp_path / "no_config.safetensors"
    save_file({"x": torch.zeros(2)}, str(nometa))
    cases["no config"] = (nometa, "no 'lsf_config' metadata")
    for what, (path, problem) in cases.items():
        with pytest.raises(ModelFileError, match=problem) as err:
            load_model(path)
        assert str(path) in str(err.value), what
    assert load_model(model_file) is not None   # the good file still loads


def test_rig_files(tmp_path, marker):
    good = save_rig(_small_rig(), tmp_path / "good.npz")
    assert load_rig(good).num_vertices == 4
    cases = {"missing": (tmp_path / "missing.npz", "does not exist")}
    trunc = tmp_path / "truncated.npz"
    trunc.write_bytes(good.read_bytes()[:200])
    cases["truncated"] = (trunc, "not a readable NPZ")
    evil = tmp_path / "evil.npz"   # an object array: np.load would unpickle it if pickles were allowed
    np.savez(evil, vertices=np.array([_RunsCode(marker)], dtype=object), faces=np.zeros((1, 3), np.int32))
    cases["pickled object array"] = (evil, "not a readable NPZ.*allow_pickle")
    flat = tmp_path / "flat.npz"
    np.savez(flat, vertices=np.zeros((4, 2), np.float32), faces=np.array([[0, 1, 2]]))
    cases["wrong shape"] = (flat, r"vertices must be \(V, 3\)")
    badf = tmp_path / "bad_faces.npz"
    np.savez(badf, vertices=np.zeros((4, 3), np.float32), faces=np.array([[0, 1, 7]]))
    cases["face index out of range"] = (badf, "face indices out of range")
    nan = tmp_path / "nan.npz"
    np.savez(nan, vertices=np.full((4, 3), np.nan, np.float32), faces=np.array([[0, 1, 2]]))
    cases["NaN vertices"] = (nan, "NaN")
    # topology: a blendshape mesh whose vertex count differs from the neutral mesh
    obj = write_obj(tmp_path / "face.obj", _small_rig().vertices, _small_rig().faces)
    (tmp_path / "face_blendshapes").mkdir()
    write_obj(tmp_path / "face_blendshapes" / "jawOpen.obj", np.zeros((3, 3)), np.array([[0, 1, 2]]))
    cases["topology mismatch"] = (obj, "jawOpen.obj: 3 vertices, the neutral mesh has 4")  # names the bad file
    glb = tmp_path / "short.glb"
    glb.write_bytes(b"glTF" + (2).to_bytes(4, "little") + (1000).to_bytes(4, "little") + b"\0" * 20)
    cases["truncated glb"] = (glb, "truncated")
    other = tmp_path / "mesh.stl"
    other.write_bytes(b"solid x")
    cases["unknown format"] = (other, "unknown format")
    for what, (path, problem) in cases.items():
        with pytest.raises(RigError, match=problem) as err:
            load_rig(path)
        assert str(path) in str(err.value) or what == "topology mismatch", (what, str(err.value))


def test_retarget_files(tmp_path, marker):
    names = ["jawOpen", "mouthClose"]
    cases = {"missing": (tmp_path / "missing.yaml", "missing.yaml")}
    texts = {
        "not yaml": ("joints: [name: jaw, weights: {", "not valid YAML"),
        "python tag": (f"!!python/object/apply:os.system ['touch {marker}']", "not valid YAML"),
        "no joints": ("joints: []", "lists no joints"),
        "weights not numbers": ("joints:\n- name: jaw\n  weights: {jawOpen: lots}", "finite number"),
        "min above max": ("joints:\n- name: jaw\n  weights: {jawOpen: 1.0}\n  min: 1\n  max: 0", "min 1"),
    }
    for what, (text, problem) in texts.items():
        p = tmp_path / f"{what.replace(' ', '_')}.yaml"
        p.write_text(text)
        cases[what] = (p, problem)
    for what, (path, problem) in cases.items():
        with pytest.raises((ConfigError, OSError), match=problem) as err:
            load_retarget_map(path)
        assert path.name in str(err.value), (what, str(err.value))
    unknown = tmp_path / "unknown_shape.yaml"
    unknown.write_text("joints:\n- name: jaw\n  weights: {jawWide: 1.0}")
    with pytest.raises(ConfigError, match="unknown_shape.yaml.*jawWide"):
        Retargeter(load_retarget_map(unknown), names, str(unknown))


def test_flame_files(tmp_path, marker, rng):
    from test_flame import synthetic_flame, write_flame_pickle

    from lsf_core.face.flame import FlameError, FlameModel

    data = synthetic_flame(rng)
    good = tmp_path / "flame.pkl"
    write_flame_pickle(good, data)
    flame = FlameModel.load(good)
    cases = {"missing": (tmp_path / "missing.pkl", "does not exist")}
    trunc = tmp_path / "truncated.pkl"
    trunc.write_bytes(good.read_bytes()[:5000])
    cases["truncated"] = (trunc, "not a readable pickle")
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"v_template": _RunsCode(marker)}, protocol=2))
    cases["crafted pickle"] = (evil, "refuses to load global .*system")
    wrong = dict(data, shapedirs=data["shapedirs"][:, :2])
    wrong_path = tmp_path / "wrong_shape.pkl"
    write_flame_pickle(wrong_path, wrong)
    cases["wrong shape"] = (wrong_path, "shapedirs")
    for what, (path, problem) in cases.items():
        with pytest.raises(FlameError, match=problem) as err:
            FlameModel.load(path)
        assert str(path) in str(err.value), (what, str(err.value))
    with pytest.raises(FlameError, match="not in FLAME topology"):   # a neutral mesh of another topology
        flame.fit_shape(np.zeros((flame.num_vertices - 1, 3)))


def test_node_names_the_parameter_and_file(tmp_path, model_file, marker, ros_env):
    trunc = tmp_path / "truncated.safetensors"
    trunc.write_bytes(model_file.read_bytes()[:1000])
    evil_rig = tmp_path / "evil.npz"
    np.savez(evil_rig, vertices=np.array([_RunsCode(marker)], dtype=object), faces=np.zeros((1, 3), np.int32))
    evil_map = tmp_path / "evil_map.yaml"
    evil_map.write_text(f"!!python/object/apply:os.system ['touch {marker}']")
    runs = {
        "model": ({"model": str(trunc)}, "not a readable .safetensors"),
        "neutral_mesh": ({"model": str(model_file), "neutral_mesh": str(evil_rig)}, "not a readable NPZ"),
        "retarget_map": ({"model": str(model_file), "retarget_map": str(evil_map)}, "not valid YAML"),
        "neutral_mesh missing": ({"model": str(model_file), "neutral_mesh": str(tmp_path / "nope.obj")},
                                 "does not exist"),
    }
    procs = {}
    for what, (params, _) in runs.items():   # all at once: each start pays for importing torch
        args = [sys.executable, "-m", "lsf_ros.animator_node", "--ros-args"]
        for k, v in params.items():
            args += ["-p", f"{k}:={v}"]
        procs[what] = subprocess.Popen(args, env=ros_env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       text=True)
    for what, (params, problem) in runs.items():
        out, err = procs[what].communicate(timeout=120)
        name = what.split()[0]
        assert procs[what].returncode == 1, (what, out, err)
        assert f"parameter {name}={params[name]!r}" in err and problem in err, (what, err)
        assert "Traceback" not in err, err
