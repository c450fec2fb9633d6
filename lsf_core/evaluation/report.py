"""Evaluation report: Markdown with PNG plots (matplotlib, headless) and an MP4 of the face. No ROS here.

- ``plot_clip``: the waveform with key blendshape curves under it (one panel per blendshape, one line per
  source: streamed, offline, ground truth), phone labels shaded;
- ``plot_latency``: histogram of frame latency with its percentiles;
- ``render_clip``: the animated mesh with the clip's audio through ``lsf_core.face.render.render_video``;
- ``write_markdown``: the metrics as tables, the plots and the video linked.
"""
from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

KEY_BLENDSHAPES = ("jawOpen", "mouthClose", "mouthFunnel", "mouthPucker", "mouthSmileLeft", "mouthStretchLeft")


@dataclass
class Curves:
    """One source of blendshape curves: times (s, clip clock), names, values (T, K)."""
    label: str
    times: np.ndarray
    names: list[str]
    values: np.ndarray
    style: str = "-"


def plot_clip(path: str | Path, audio: np.ndarray, sample_rate: int, curves: list[Curves],
              phones: list | None = None, title: str = "", keys: tuple[str, ...] = KEY_BLENDSHAPES) -> Path:
    """Waveform on top, one panel per key blendshape present in any source under it; shared time axis;
    /p b m/ phones shaded."""
    from lsf_core.arkit import canonical_name
    from lsf_core.evaluation.metrics import BILABIALS, phone_key

    path = Path(path)
    present = [k for k in keys if any(k in {canonical_name(n) for n in c.names} for c in curves)]
    fig, axes = plt.subplots(1 + len(present), 1, sharex=True, figsize=(11, 1.6 + 1.3 * len(present)),
                             squeeze=False)
    axes = axes[:, 0]
    t_audio = np.arange(len(audio)) / float(sample_rate)
    axes[0].plot(t_audio, audio, lw=0.5, color="0.3")
    axes[0].set_ylabel("audio")
    axes[0].set_title(title)
    for p in phones or []:
        if phone_key(p.label) in BILABIALS:
            for ax in axes:
                ax.axvspan(p.start, p.end, color="C9", alpha=0.2, lw=0)
        axes[0].text(0.5 * (p.start + p.end), 0.9 * (np.abs(audio).max() or 1.0), p.label, fontsize=6,
                     ha="center", va="top")
    for ax, key in zip(axes[1:], present):
        for i, c in enumerate(curves):
            idx = {canonical_name(n): j for j, n in enumerate(c.names)}
            if key in idx and len(c.times):
                ax.plot(c.times, c.values[:, idx[key]], c.style, color=f"C{i}", lw=1.0, label=c.label)
        ax.set_ylabel(key, fontsize=8)
        ax.set_ylim(-0.02, 1.02)
    if present:
        axes[1].legend(loc="upper right", fontsize=7, ncol=len(curves))
    axes[-1].set_xlabel("time (s)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_latency(path: str | Path, latency_ms: np.ndarray, title: str = "frame latency (receive - stamp)") -> Path:
    path = Path(path)
    ms = np.asarray(latency_ms, np.float64).ravel()
    fig, ax = plt.subplots(figsize=(7, 3.2))
    if ms.size:
        ax.hist(ms, bins=min(60, max(10, ms.size // 5)), color="C0")
        for q, style in ((50, "-"), (95, "--"), (99, ":")):
            v = float(np.percentile(ms, q))
            ax.axvline(v, color="k", ls=style, lw=1, label=f"p{q} {v:.0f} ms")
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no frames", ha="center", transform=ax.transAxes)
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("frames")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def render_clip(path: str | Path, vertices: np.ndarray, faces: np.ndarray, fps: float,
                audio: np.ndarray | None = None, sample_rate: int = 16000, size: int = 480) -> Path:
    """(T, V, 3) vertices -> MP4 with the clip's audio muxed in (``lsf_core.face.render.render_video``)."""
    from lsf_core.face.render import render_video

    path = Path(path)
    if audio is None:
        render_video(vertices, faces, fps, path, audio_path=None, size=size)
        return path
    import soundfile as sf

    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "audio.wav"
        sf.write(str(wav), np.asarray(audio, np.float32), int(sample_rate))
        render_video(vertices, faces, fps, path, audio_path=wav, size=size)
    return path


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return ", ".join(f"{k} {_fmt(x)}" for k, x in v.items())
    return str(v)


def _table(d: dict) -> list[str]:
    rows = ["| metric | value |", "|---|---|"]
    rows += [f"| {k} | {_fmt(v)} |" for k, v in d.items()]
    return rows


def write_markdown(path: str | Path, metrics: dict, images: list[Path], videos: list[Path],
                   title: str = "Face animation evaluation") -> Path:
    """``metrics``: {"summary": {...}, "clips": [{"name": ..., section: {...}}]} as ``lsf-bag eval`` makes."""
    path = Path(path)
    lines = [f"# {title}", ""]
    if metrics.get("summary"):
        lines += ["## Summary", ""] + _table(metrics["summary"]) + [""]
    for clip in metrics.get("clips", []):
        lines += [f"## Clip {clip.get('name', '?')}", ""]
        for section, values in clip.items():
            if isinstance(values, dict) and values:
                lines += [f"### {section}", ""] + _table(values) + [""]
    if images:
        lines += ["## Plots", ""] + [f"![{p.stem}]({p.name})" for p in images] + [""]
    if videos:
        lines += ["## Video", ""] + [f"- [{p.name}]({p.name})" for p in videos] + [""]
    lines += ["Raw numbers: [metrics.json](metrics.json)", ""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def write_json(path: str | Path, metrics: dict) -> Path:
    path = Path(path)
    path.write_text(json.dumps(metrics, indent=2, default=_json_default), encoding="utf-8")
    return path


def _json_default(o: object) -> object:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")
