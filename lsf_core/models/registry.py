"""Build, save and load models. A model file is one ``.safetensors`` whose metadata holds its config.

- ``build_model("realtime")`` / ``build_model("paper")``: a preset with fresh weights;
- ``save_model(model, path)``: weights + config (YAML in the safetensors metadata) in one file;
- ``load_model(path_or_preset)``: a preset name loads the weights shipped in ``lsf_core/weights``,
  a path loads that file. Loading never unpickles anything.

Each architecture class has a ``config_class`` dataclass with an ``arch`` field and takes that
config in its constructor.
"""
from __future__ import annotations

import importlib
from pathlib import Path

import yaml

from lsf_core.config import ConfigError, dump_config, from_dict
from lsf_core.models.base import AnimationModel, state_mismatch

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
ARCHS: dict[str, str] = {
    "paper": "lsf_core.models.lsf_paper:LSFPaperModel",
    "realtime": "lsf_core.models.realtime:RealtimeLSF",
}
DEFAULT_MODEL = "realtime"


class ModelFileError(ConfigError):
    """A model file that cannot be loaded; the message names the file and the problem."""


def model_class(arch: str) -> type[AnimationModel]:
    if arch not in ARCHS:
        raise ConfigError(f"unknown model architecture {arch!r}; known: {', '.join(ARCHS)}")
    module, name = ARCHS[arch].split(":")
    return getattr(importlib.import_module(module), name)


def build_model(arch: str, overrides: dict | None = None) -> AnimationModel:
    cls = model_class(arch)
    cfg = from_dict(cls.config_class, {"arch": arch, **(overrides or {})}, where=f"preset {arch}")
    return cls(cfg)


def save_model(model: AnimationModel, path: str | Path, extra: dict[str, str] | None = None) -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {"lsf_config": dump_config(model.config), "format": "lsf_ros-model-1", **(extra or {})}
    save_file(state, str(path), metadata=meta)
    return path


def resolve_model_path(name_or_path: str | Path) -> Path:
    p = Path(name_or_path)
    if str(name_or_path) in ARCHS or p.suffix == "":
        shipped = WEIGHTS_DIR / f"{name_or_path}.safetensors"
        if shipped.is_file():
            return shipped
        shipped_names = ", ".join(sorted(q.stem for q in WEIGHTS_DIR.glob("*.safetensors"))) or "none"
        raise ModelFileError(f"no shipped weights for preset {str(name_or_path)!r} in {WEIGHTS_DIR}; "
                             f"give a .safetensors path (presets with weights: {shipped_names})")
    return p


def load_model(name_or_path: str | Path = DEFAULT_MODEL, map_location: str = "cpu") -> AnimationModel:
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    path = resolve_model_path(name_or_path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(path), device=map_location)
    except (SafetensorError, OSError, ValueError) as err:
        raise ModelFileError(f"{path}: not a readable .safetensors model file ({err})") from err
    if "lsf_config" not in meta:
        raise ModelFileError(f"{path}: safetensors file has no 'lsf_config' metadata; "
                             "convert released checkpoints with `lsf convert`")
    try:
        cfg_dict = yaml.safe_load(meta["lsf_config"])
    except yaml.YAMLError as err:
        raise ModelFileError(f"{path}: model config metadata is not valid YAML: {err}") from err
    arch = cfg_dict.get("arch") if isinstance(cfg_dict, dict) else None
    cls = model_class(str(arch))
    model = cls(from_dict(cls.config_class, cfg_dict, where=f"{path} config"))
    mismatch = state_mismatch(state, model.state_dict(), limit=5)
    if mismatch:
        raise ModelFileError(f"{path}: weights do not match a {arch} model: {mismatch}")
    model.load_state_dict(state)
    return model.eval()
