"""Animate an audio file offline and write the result as NPZ.

NPZ layout (shared by ``lsf infer``, the ROS runner's recordings and ``lsf render``):
``fps`` (), ``times`` (T,) s, ``blendshape_names`` (K,), ``blendshapes`` (T, K) in 0..1,
``vertex_offsets`` (T, V, 3) metres, ``faces`` (F, 3), ``neutral`` (V, 3) metres, ``pose_names`` (5,) and
``pose`` (T, 5) head and eye angles in radians (``lsf_core.arkit.POSE_NAMES``; zeros with the liveliness layer
off), ``head_pivot`` (3,) metres (the point the head turns about), and ``flame`` (T, 53) when the model outputs
FLAME parameters.

``infer_batch`` runs a model on several whole clips at once (any rates and channel counts) and returns the
raw per-frame outputs at the model's 25 fps; ``--identity SHAPE.npy`` animates a given FLAME shape with a
FLAME-output model (whole clip, no streaming gate: the paper model's own frames and numbers), with vertices
when ``--flame-model`` is given. ``sample_temperature``/``seed`` switch a model with a codebook (paper) from
the nearest code to seeded sampling (``load_inference_model``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from lsf_core.arkit import POSE_NAMES
from lsf_core.face.head_pose import head_pivot
from lsf_core.runtime.liveliness import LivelinessConfig
from lsf_core.runtime.streaming import Frame, StreamConfig, StreamingAnimator


def frames_to_arrays(frames: list[Frame], animator: StreamingAnimator, fps: float) -> dict[str, np.ndarray]:
    out = {
        "fps": np.float32(fps),
        "times": np.array([f.stamp for f in frames], np.float64),
        "blendshape_names": np.array(animator.blendshape_names),
        "blendshapes": np.stack([f.blendshapes for f in frames]).astype(np.float32),
        "vertex_offsets": np.stack([f.vertex_offsets for f in frames]).astype(np.float32),
        "faces": np.asarray(animator.rig.faces, np.int32),
        "neutral": np.asarray(animator.rig.vertices, np.float32),
        "pose_names": np.array(POSE_NAMES),
        "pose": np.stack([f.pose for f in frames]).astype(np.float32) if frames else np.zeros((0, len(POSE_NAMES))),
        "head_pivot": np.asarray(animator.head_pivot, np.float32),
    }
    if frames and frames[0].flame is not None:
        out["flame"] = np.stack([f.flame for f in frames]).astype(np.float32)
    return out


def _read(audio_path: str | Path) -> tuple[np.ndarray, int]:
    import soundfile as sf

    from lsf_core.audio import AudioError, load_audio

    try:
        data, sr = sf.read(str(audio_path), dtype="float32", always_2d=True)
    except Exception:  # noqa: BLE001 - formats soundfile cannot read go through ffmpeg at 16 kHz
        data, sr = load_audio(audio_path)[:, None], 16000
    if data.size == 0:
        raise AudioError(f"{audio_path}: the file holds no samples")
    return data, int(sr)


def load_identity(path: str | Path, dim: int) -> np.ndarray:
    """A FLAME shape vector (.npy, ``dim`` values, or fewer: the rest are zero)."""
    try:
        a = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ValueError(f"--identity {path}: cannot read a .npy shape vector ({exc})") from exc
    a = np.asarray(a, np.float32).reshape(-1)
    if a.size == 0 or a.size > dim or not np.isfinite(a).all():
        raise ValueError(f"--identity {path}: expected 1..{dim} finite FLAME shape values, got {a.size}")
    return np.pad(a, (0, dim - a.size))


def infer_batch(model, audios: list[np.ndarray], identities: list[np.ndarray | None] | None = None,
                rates: list[int] | None = None, device: str = "cpu") -> list[np.ndarray]:
    """Whole clips -> the model's raw outputs, one (T_i, C) array per clip at 25 fps (T_i = the frames the
    model computes for the clip at 16 kHz, ``model.clip_frames``: the release's floor(T50 / 2) for paper, the
    num_frames grid for others). Audio: (S,) or (S, channels), any rate (``rates``, default 16 kHz). Models
    with per-clip lengths (paper) run as one padded batch; others clip by clip."""
    import inspect

    import torch

    from lsf_core.audio import downmix, resample, to_float
    from lsf_core.models.base import AUDIO_RATE

    rates = rates or [AUDIO_RATE] * len(audios)
    identities = identities or [None] * len(audios)
    if not (len(audios) == len(rates) == len(identities)) or not audios:
        raise ValueError(f"infer_batch: {len(audios)} clips, {len(rates)} rates, {len(identities)} identities")
    clips = [resample(downmix(to_float(np.asarray(a), f"clip {i}")), int(r), AUDIO_RATE).astype(np.float32)
             for i, (a, r) in enumerate(zip(audios, rates))]
    ident = torch.from_numpy(np.stack([np.zeros(model.identity_dim, np.float32) if x is None
                                       else np.asarray(x, np.float32).reshape(model.identity_dim)
                                       for x in identities])).to(device)
    with torch.inference_mode():
        if "lengths" in inspect.signature(model.forward).parameters:
            longest = max(c.size for c in clips)
            audio = torch.from_numpy(np.stack([np.pad(c, (0, longest - c.size)) for c in clips])).to(device)
            out = model(audio, ident, lengths=torch.tensor([c.size for c in clips])).float().cpu().numpy()
            return [out[i, :model.clip_frames(c.size)] for i, c in enumerate(clips)]
        return [model(torch.from_numpy(c)[None].to(device), ident[i:i + 1])[0, :model.clip_frames(c.size)]
                .float().cpu().numpy() for i, c in enumerate(clips)]


def load_inference_model(model: str, sample_temperature: float | None = None, seed: int | None = None):
    """``load_model(model)``; with ``sample_temperature`` its codes are sampled at that temperature (the
    release's generation, 0.2 there) from generators seeded with ``seed``, instead of the nearest code. Only
    models with a codebook (paper) sample; asking another is a ValueError."""
    from lsf_core.config import ConfigError
    from lsf_core.models.registry import load_model

    net = load_model(model).eval()
    if sample_temperature is None and seed is None:
        return net
    if not hasattr(net, "set_sampling"):
        raise ValueError(f"--sample-temperature/--seed: model {model!r} has no codebook to sample "
                         "(only the paper model quantises)")
    if sample_temperature is None and net.config.codes != "sample":
        raise ValueError("--seed only applies to sampled codes: add --sample-temperature (0.2 as released)")
    try:
        net.set_sampling(sample_temperature if sample_temperature is not None else net.config.temperature, seed)
    except ConfigError as err:
        raise ValueError(f"--sample-temperature: {err}") from err
    return net


def infer_identity(audio_path: str | Path, model, identity: np.ndarray | None, flame_model: str = "",
                   sample_temperature: float | None = None, seed: int | None = None) -> dict:
    """A FLAME-output model animating the FLAME shape ``identity`` (None: the mean identity) over a whole clip
    -> the NPZ arrays (25 fps, the model's own ``clip_frames``: the release's for paper; vertices only with a
    FLAME model file). ``model`` is a name/path or an already loaded model."""
    net = model if hasattr(model, "output_kind") else load_inference_model(model, sample_temperature, seed)
    if identity is None:
        identity = np.zeros(net.identity_dim, np.float32)
    if net.output_kind != "flame":
        raise ValueError(f"--identity needs a FLAME-output model (paper); {model!r} outputs {net.output_kind}")
    data, sr = _read(audio_path)
    params = infer_batch(net, [data], [identity], [sr])[0]
    out = {"fps": np.float32(net.fps), "times": np.arange(len(params)) / net.fps,
           "blendshape_names": np.array([], dtype=str), "blendshapes": np.zeros((len(params), 0), np.float32),
           "vertex_offsets": np.zeros((len(params), 0, 3), np.float32), "faces": np.zeros((0, 3), np.int32),
           "neutral": np.zeros((0, 3), np.float32), "flame": params.astype(np.float32),
           # as released: the network's frames alone, no liveliness layer (zero head/eye angles)
           "pose_names": np.array(POSE_NAMES), "pose": np.zeros((len(params), len(POSE_NAMES)), np.float32),
           "head_pivot": np.zeros(3, np.float32)}
    if flame_model:
        from lsf_core.face.flame import FlameModel

        flame = FlameModel.load(flame_model)
        out.update(vertex_offsets=flame.offsets(params, shape=identity).astype(np.float32),
                   faces=np.asarray(flame.faces, np.int32), neutral=flame.vertices(shape=identity))
        out["head_pivot"] = head_pivot(out["neutral"]).astype(np.float32)
    return out


def infer_file(audio_path: str | Path, model="realtime", neutral_mesh: str = "", rate: float | None = None,
               flame_model: str = "", animator: StreamingAnimator | None = None,
               sample_temperature: float | None = None, seed: int | None = None,
               liveliness: LivelinessConfig | None = None, start: float = 0.0) -> dict[str, np.ndarray]:
    """Audio file of any common format, rate and channel count -> the NPZ arrays above, through the streaming
    engine (the node's code: output rate, voice gate, rig, liveliness layer). ``model`` is a name/path or a
    loaded model. ``start``: the capture stamp of the first sample, as a node would see it (the liveliness
    layer draws from its seed and the stream's start stamp); the returned times stay relative to it."""
    if animator is None:
        net = model if hasattr(model, "output_kind") else load_inference_model(model, sample_temperature, seed)
        cfg = StreamConfig(model=str(model) if isinstance(model, (str, Path)) else "", neutral_mesh=neutral_mesh,
                           flame_model=flame_model, rate=rate or 25.0, liveliness=liveliness or LivelinessConfig())
        animator = StreamingAnimator(cfg, model=net)
    elif rate:
        animator.set_rate(rate)
    data, sr = _read(audio_path)
    out = frames_to_arrays(animator.animate(data, sr, start), animator, animator.config.rate)
    out["times"] -= start
    return out
