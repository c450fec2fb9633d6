"""A restricted unpickler for model files that were pickled with numpy, scipy.sparse and chumpy inside.

Only allow-listed globals are ever resolved: numpy's array/scalar/dtype reconstructors and a few
builtin containers. chumpy objects (any ``chumpy.*`` class) and scipy sparse matrices are rebuilt as
inert placeholders that only store their pickled state, then turned into plain ``np.ndarray`` and
``scipy.sparse`` matrices; sklearn ``MinMaxScaler``/``StandardScaler`` objects become the dict of their state.
Nothing is imported from the file and no code named by the file runs: a
pickle that asks for anything else (``os.system``, ``builtins.eval``, ...) raises :class:`UnsafePickleError`.
Neither chumpy nor any module the file names needs to be installed.

Torch checkpoints (``torch_load_inert``) go through torch's weights-only loader with the same idea: plain data
(builtin containers, numpy scalars/dtypes/arrays) loads as data, classes the caller names (configs such as
omegaconf's) load as :class:`InertObject` placeholders, anything else is refused.
"""
from __future__ import annotations

import importlib
import io
import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle asks for something outside the allow-list (or is not a readable pickle)."""


def _numpy_multiarray():
    for name in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise ImportError("numpy multiarray module not found")


class _Placeholder:
    """Stands in for a chumpy object or a sparse matrix: keeps the constructor args and the state."""
    kind = "object"
    source = "?"
    state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _Chumpy(_Placeholder):
    kind = "chumpy"


class _Sparse(_Placeholder):
    kind = "sparse"


class _Scaler(_Placeholder):
    kind = "scaler"


def _placeholder_class(base: type[_Placeholder], module: str, name: str) -> type[_Placeholder]:
    return type(name, (base,), {"source": f"{module}.{name}"})


def _reconstructor(cls, base, state):
    """``copyreg._reconstructor`` for placeholders only (never ``base.__new__`` of an arbitrary class)."""
    if isinstance(cls, type) and issubclass(cls, _Placeholder):
        return object.__new__(cls)
    raise UnsafePickleError(f"copyreg._reconstructor of {cls!r} is not allowed")


def _encode(text, encoding="utf-8"):
    """``_codecs.encode`` as protocol-2 pickles use it for bytes: str -> bytes only."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1", "utf-8", "utf8"):
        raise UnsafePickleError("_codecs.encode is only allowed on text with a latin1/utf-8 encoding")
    return text.encode(encoding)


_SPARSE_NAMES = {"csc_matrix", "csr_matrix", "coo_matrix", "csc_array", "csr_array"}
_SCALER_NAMES = {"MinMaxScaler", "StandardScaler"}  # sklearn.preprocessing: become the dict of their state


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, source: str):
        super().__init__(file, encoding="latin1")
        self.source = source
        self._classes: dict[tuple[str, str], type] = {}
        ma = _numpy_multiarray()
        self._allowed = {
            ("multiarray", "_reconstruct"): ma._reconstruct,
            ("multiarray", "scalar"): ma.scalar,
            ("numpy", "ndarray"): np.ndarray,
            ("numpy", "dtype"): np.dtype,
            ("builtins", "set"): set,
            ("builtins", "frozenset"): frozenset,
            ("builtins", "object"): object,
            ("builtins", "slice"): slice,
            ("copyreg", "_reconstructor"): _reconstructor,
            ("_codecs", "encode"): _encode,
        }

    def find_class(self, module: str, name: str):
        mod = {"__builtin__": "builtins", "copy_reg": "copyreg"}.get(module, module)
        if mod.startswith("numpy") and mod.endswith("multiarray"):
            mod = "multiarray"
        if (mod, name) in self._allowed:
            return self._allowed[(mod, name)]
        if mod == "chumpy" or mod.startswith("chumpy."):
            base: type[_Placeholder] = _Chumpy
        elif mod.startswith("scipy.sparse") and name in _SPARSE_NAMES:
            base = _Sparse
        elif mod.startswith("sklearn.preprocessing") and name in _SCALER_NAMES:
            base = _Scaler
        else:
            raise UnsafePickleError(f"{self.source}: refuses to load global {module}.{name} "
                                    "(only numpy arrays, scipy sparse matrices, chumpy arrays and sklearn scalers "
                                    "are allowed)")
        key = (mod, name)
        if key not in self._classes:
            self._classes[key] = _placeholder_class(base, mod, name)
        return self._classes[key]


def _convert(obj: Any, source: str, depth: int = 0) -> Any:
    if depth > 50:
        raise UnsafePickleError(f"{source}: nesting too deep")
    if isinstance(obj, _Chumpy):
        state = obj.state if isinstance(obj.state, dict) else {}
        if "x" not in state:
            raise UnsafePickleError(f"{source}: chumpy object {obj.source} holds no plain array ('x'); "
                                    "only plain chumpy arrays can be read without chumpy")
        return np.asarray(_convert(state["x"], source, depth + 1))
    if isinstance(obj, _Sparse):
        import scipy.sparse as sp

        state = obj.state if isinstance(obj.state, dict) else {}
        try:
            shape = tuple(int(s) for s in state.get("_shape", state.get("shape")))
            data, indices, indptr = (np.asarray(state[k]) for k in ("data", "indices", "indptr"))
        except (KeyError, TypeError) as e:
            raise UnsafePickleError(f"{source}: sparse matrix {obj.source} without data/indices/indptr/shape") from e
        cls = sp.csr_matrix if "csr" in obj.source else sp.csc_matrix
        return cls((data, indices, indptr), shape=shape)
    if isinstance(obj, _Scaler) and isinstance(obj.state, dict):
        return {"class": obj.source, **_convert(obj.state, source, depth + 1)}
    if isinstance(obj, _Placeholder):
        raise UnsafePickleError(f"{source}: unsupported object {obj.source}")
    if isinstance(obj, dict):
        return {k: _convert(v, source, depth + 1) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_convert(v, source, depth + 1) for v in obj)
    return obj


def loads(data: bytes, source: str = "<bytes>") -> Any:
    """Unpickle ``data`` with the allow-list; chumpy and sparse placeholders become arrays/matrices."""
    try:
        obj = _RestrictedUnpickler(io.BytesIO(data), source).load()
    except UnsafePickleError:
        raise
    except Exception as e:  # truncated or corrupt: EOFError, UnpicklingError, ValueError, ...
        raise UnsafePickleError(f"{source}: not a readable pickle ({type(e).__name__}: {e})") from e
    return _convert(obj, source)


def load(path: str | Path) -> Any:
    """Read and safely unpickle the file at ``path``."""
    path = Path(path)
    return loads(path.read_bytes(), str(path))


class InertObject:
    """Stands in for an object of a class a torch checkpoint names (a pickled config or hyper-parameter
    object): keeps its constructor arguments and state, runs nothing, imports nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state: Any) -> None:
        self.state = state


def _plain_dict(default_factory: Any = None, *args: Any) -> dict:
    """``collections.defaultdict`` as a pickle rebuilds it (factory, then items): a plain dict; the factory,
    whatever the file names there, is dropped and never called."""
    return dict(*args)


def _data_globals() -> dict[str, Any]:
    """Globals that torch checkpoints written with omegaconf, Lightning and numpy name for plain data, each
    resolved to a constructor that builds data and runs nothing else: builtin types (omegaconf metadata
    names ``dict``/``list``/``int`` as types), ``collections.defaultdict`` (as a plain dict), ``typing.Any``
    (omegaconf's untyped nodes), numpy scalars, dtypes and arrays under numpy 1.x (``numpy.core``) and
    2.x (``numpy._core``) module names."""
    ma = _numpy_multiarray()
    table: dict[str, Any] = {f"builtins.{t.__name__}": t for t in (dict, list, tuple, int, float, str, bool)}
    table.update({"collections.defaultdict": _plain_dict, "typing.Any": Any,
                  "numpy.dtype": np.dtype, "numpy.ndarray": np.ndarray})
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        table.update({f"{module}.scalar": ma.scalar, f"{module}._reconstruct": ma._reconstruct})
    return table


def _dtype_classes() -> list[tuple[type, str]]:
    """A pickled dtype is rebuilt as an instance of its concrete class (numpy 2: ``numpy.dtypes.Float64DType``,
    ...), which the file never names but torch's loader must know to restore the dtype's state."""
    return [(cls, f"{cls.__module__}.{cls.__qualname__}") for cls in {type(np.dtype(c)) for c in np.typecodes["All"]}]


def load_error_reason(err: Exception) -> str:
    """One line saying why torch's loader refused a file: the line naming the refused global when there is one
    (torch's message opens with a generic paragraph), terminal colour codes removed."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(err).splitlines()]
    lines = [line for line in lines if line]
    named = [line for line in lines if "GLOBAL" in line or "global" in line.split(":")[0]]
    return f"{type(err).__name__}: {(named or lines or [''])[0].split(' Please use')[0]}"  # not torch's advice


def torch_load_inert(path: str | Path, inert: Callable[[str], bool]) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, where the plain-data globals of
    :func:`_data_globals` load as that data, each other global the file names (outside torch's
    weights-only allow-list) for which ``inert(name)`` is true loads as an :class:`InertObject`, and any other
    global is refused (``pickle.UnpicklingError``), as is any global of a module torch blocks (``os``,
    ``sys``, ...) whatever ``inert`` says. The names are listed by scanning the pickle's opcodes, not by
    running it."""
    import torch

    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception:  # not a zip checkpoint: let torch.load say what is wrong with it
        names = []
    data = _data_globals()
    allowed = [(data[n], n) for n in names if n in data] + [(InertObject, n) for n in names
                                                             if n not in data and inert(n)]
    if "numpy.dtype" in names:
        allowed += _dtype_classes()
    with torch.serialization.safe_globals(allowed):
        return torch.load(str(path), map_location="cpu", weights_only=True)
