"""FLAME loading (restricted unpickler, no chumpy) and skinning on a synthetic file in the FLAME layout."""
from __future__ import annotations

import os
import pickle
import sys
import types

import numpy as np
import pytest
import scipy.sparse as sp

from lsf_core.face.flame import N_EXPRESSION, N_SHAPE, FlameError, FlameModel
from lsf_core.safe_pickle import UnsafePickleError, load

V = 400


class _FakeCh:
    """Pickles like chumpy's Ch: class path chumpy.ch.Ch, state = __dict__ with the array under 'x'."""

    def __init__(self, x):
        self.x = np.asarray(x, np.float64)
        self._dirty_vars = {"x"}
        self._itr = None
        self._depends_on_deps = {}
        self._make_dense = False
        self._make_sparse = False

    def __reduce_ex__(self, protocol):
        import copyreg

        return (copyreg._reconstructor, (sys.modules["chumpy.ch"].Ch, object, None), dict(self.__dict__))


def synthetic_flame(rng: np.random.Generator) -> dict:
    """Random bases on a head-like point cloud; the real FLAME kinematic tree (global, neck, jaw, eyes)."""
    pts = rng.normal(size=(V, 3))
    pts = pts / np.linalg.norm(pts, axis=1, keepdims=True) * np.array([0.075, 0.11, 0.09])
    weights = np.zeros((V, 5))
    jaw = (pts[:, 1] < -0.04) & (pts[:, 2] > 0)
    eye_l = (np.abs(pts[:, 0] - 0.03) < 0.012) & (np.abs(pts[:, 1] - 0.03) < 0.012) & (pts[:, 2] > 0)
    eye_r = (np.abs(pts[:, 0] + 0.03) < 0.012) & (np.abs(pts[:, 1] - 0.03) < 0.012) & (pts[:, 2] > 0)
    neck = (pts[:, 1] < -0.04) & (pts[:, 2] <= 0)
    weights[jaw, 2] = 1
    weights[eye_l, 3] = 1
    weights[eye_r, 4] = 1
    weights[neck & ~jaw, 1] = 1
    weights[weights.sum(1) == 0, 0] = 1
    groups = [np.nonzero(weights[:, j] > 0)[0] for j in range(5)]
    jr = np.zeros((5, V))
    for j, g in enumerate(groups):
        jr[j, g] = 1.0 / len(g)
    return {
        "v_template": pts,
        "f": rng.integers(0, V, size=(700, 3)).astype(np.uint32),
        "shapedirs": rng.normal(scale=1e-3, size=(V, 3, N_SHAPE + 100)),
        "posedirs": rng.normal(scale=2e-4, size=(V, 3, 36)),
        "J_regressor": sp.csc_matrix(jr),
        "kintree_table": np.array([[4294967295, 0, 1, 1, 1], [0, 1, 2, 3, 4]], np.int64),
        "weights": weights,
        "bs_style": "lbs",
        "bs_type": "lrotmin",
    }


def write_flame_pickle(path, data: dict) -> None:
    """Write like the released files: chumpy objects for the bases, Python-2 protocol."""
    out = dict(data)
    for k in ("shapedirs", "v_template", "posedirs"):
        out[k] = _FakeCh(data[k])
    # a stand-in "chumpy.ch.Ch" exists only while pickling, so the file names chumpy like the real ones
    pkg, mod = types.ModuleType("chumpy"), types.ModuleType("chumpy.ch")
    mod.Ch = type("Ch", (), {"__module__": "chumpy.ch"})
    pkg.ch = mod
    sys.modules.update({"chumpy": pkg, "chumpy.ch": mod})
    try:
        with open(path, "wb") as fh:
            pickle.dump(out, fh, protocol=2)
    finally:
        del sys.modules["chumpy"], sys.modules["chumpy.ch"]


@pytest.fixture(scope="module")
def flame_file(tmp_path_factory):
    rng = np.random.default_rng(3)
    data = synthetic_flame(rng)
    path = tmp_path_factory.mktemp("flame") / "generic_model.pkl"
    write_flame_pickle(path, data)
    return path, data


def test_pickle_names_chumpy_and_loads_without_it(flame_file):
    path, data = flame_file
    raw = path.read_bytes()
    assert b"chumpy.ch" in raw and b"Ch" in raw and b"scipy.sparse" in raw
    assert "chumpy" not in sys.modules
    loaded = load(path)
    assert "chumpy" not in sys.modules
    assert isinstance(loaded["shapedirs"], np.ndarray) and sp.issparse(loaded["J_regressor"])
    np.testing.assert_array_equal(loaded["shapedirs"], data["shapedirs"])
    np.testing.assert_array_equal(loaded["J_regressor"].toarray(), data["J_regressor"].toarray())


def test_zero_params_give_template(flame_file):
    path, data = flame_file
    model = FlameModel.load(path)
    np.testing.assert_allclose(model.vertices(), data["v_template"], atol=1e-6)
    np.testing.assert_allclose(model.offsets(np.zeros((4, N_EXPRESSION + 3))), 0, atol=1e-7)


def test_jaw_moves_only_jaw_weighted_vertices(flame_file):
    path, data = flame_file
    model = FlameModel.load(path)
    params = np.zeros(N_EXPRESSION + 3)
    params[N_EXPRESSION] = 0.3   # jaw opens about x
    off = model.offsets(params)
    jaw = data["weights"][:, 2] > 0
    moved = np.linalg.norm(off, axis=1)
    assert moved[jaw].min() > 1e-3
    # others move only by the (small) pose correctives, far less than the rotation of the jaw
    assert moved[~jaw].max() < 0.2 * np.median(moved[jaw])
    # without correctives the rest is exactly still
    model.posedirs[:] = 0
    still = np.linalg.norm(model.offsets(params), axis=1)
    assert still[~jaw].max() < 1e-7 and still[jaw].min() > 1e-3
    # a rotation keeps distances among jaw vertices
    v = model.vertices(jaw=params[N_EXPRESSION:])[jaw]
    d0 = np.linalg.norm(data["v_template"][jaw][:5, None] - data["v_template"][jaw][None, :5], axis=-1)
    np.testing.assert_allclose(np.linalg.norm(v[:5, None] - v[None, :5], axis=-1), d0, atol=1e-6)


def test_expression_is_linear_and_batched(flame_file):
    path, data = flame_file
    model = FlameModel.load(path)
    rng = np.random.default_rng(0)
    params = np.zeros((3, N_EXPRESSION + 3))
    params[:, :N_EXPRESSION] = rng.normal(size=(3, N_EXPRESSION))
    off = model.offsets(params)
    assert off.shape == (3, V, 3) and off.dtype == np.float32
    basis = data["shapedirs"][:, :, N_SHAPE:N_SHAPE + N_EXPRESSION]
    expected = np.einsum("vce,te->tvc", basis, params[:, :N_EXPRESSION])
    np.testing.assert_allclose(off, expected, atol=1e-6)
    np.testing.assert_allclose(model.offsets(params[1]), off[1], atol=1e-6)


def test_fit_recovers_shape(flame_file):
    path, _ = flame_file
    model = FlameModel.load(path)
    beta = np.random.default_rng(1).normal(size=N_SHAPE)
    neutral = model.vertices(shape=beta)
    np.testing.assert_allclose(model.fit_shape(neutral), beta, atol=1e-3)
    rig = model.rig(beta)
    assert rig.identity.shape == (N_SHAPE,) and rig.deltas.shape == (N_EXPRESSION, V, 3)
    np.testing.assert_allclose(rig.vertices, neutral, atol=1e-6)


def test_crafted_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"v_template": Evil()}, protocol=2))
    with pytest.raises(FlameError, match=r"evil\.pkl.*system"):
        FlameModel.load(path)
    assert not marker.exists()
    with pytest.raises(UnsafePickleError, match="builtins.eval"):
        load_bytes = pickle.dumps(eval)
        from lsf_core.safe_pickle import loads

        loads(load_bytes, "x.pkl")


def test_bad_files_are_named(tmp_path, flame_file):
    path, data = flame_file
    trunc = tmp_path / "trunc.pkl"
    trunc.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(FlameError, match="trunc.pkl"):
        FlameModel.load(trunc)
    wrong = dict(data)
    del wrong["weights"]
    bad = tmp_path / "noweights.pkl"
    write_flame_pickle(bad, wrong)
    with pytest.raises(FlameError, match=r"noweights\.pkl.*weights"):
        FlameModel.load(bad)
    with pytest.raises(FlameError, match="does not exist"):
        FlameModel.load(tmp_path / "missing.pkl")
