"""``lsf-bag eval``: a recorded bag -> metrics JSON + Markdown report with plots and an MP4.

Clips come from the replay's clip list (or runs of audio separated by more than ``SEGMENT_GAP``);
each is compared with the offline result on the same audio, its ground truth and its phone labels.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lsf_core.evaluation import metrics as M
from lsf_core.evaluation import report as R
from lsf_core.evaluation.truth import Truth, load_indices, load_truth_npz
from lsf_ros.bags import io as B
from lsf_ros.bags.make import truths_from_bag

SEGMENT_GAP = 0.5      # s of missing audio that separates two clips in a bag without a clip list


@dataclass
class Clip:
    name: str
    start: float            # capture time of the first sample, on the output bag's clock
    duration: float
    phones: list[M.Phone]
    truth: Truth | None = None


def _segments(audio: B.AudioStream) -> list[Clip]:
    """Clips of a bag without a clip list: runs of audio separated by more than SEGMENT_GAP."""
    ends = audio.chunk_starts + audio.chunk_sizes / audio.sample_rate
    breaks = np.flatnonzero(audio.chunk_starts[1:] - ends[:-1] > SEGMENT_GAP) + 1
    bounds = np.concatenate([[0], breaks, [len(ends)]])
    return [Clip(f"segment{i}", float(audio.chunk_starts[a]), float(ends[b - 1] - audio.chunk_starts[a]), [])
            for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:]))]


def _clip_audio(audio: B.AudioStream, clip: Clip) -> np.ndarray:
    sel = (audio.chunk_starts >= clip.start - 1e-3) & (audio.chunk_starts < clip.start + clip.duration - 1e-6)
    offsets = np.concatenate([[0], np.cumsum(audio.chunk_sizes)])
    return np.concatenate([audio.samples[offsets[i]:offsets[i + 1]] for i in np.flatnonzero(sel)] or [np.zeros(0)])


def _attach_truth(clips: list[Clip], truth: str | None, replay: dict | None) -> None:
    source = truth or (replay or {}).get("source")
    if not source or not Path(source).exists():
        return
    if B.is_bag(source):
        found = truths_from_bag(source)
        if truth and len(found) != len(clips):
            raise ValueError(f"{source}: {len(found)} clips with ground truth, the output bag has {len(clips)}")
        for clip, (_, t) in zip(clips, found):
            clip.truth = t
    else:
        clips[0].truth = load_truth_npz(source)
    for clip in clips:
        if clip.truth is not None and not clip.phones:
            clip.phones = clip.truth.phones


def _diagnostics(records: list[B.Record]) -> dict:
    if not records:
        return {}
    status = records[-1].msg.status
    return {kv.key: kv.value for kv in status[0].values} if status else {}


def _rig_mesh(neutral_mesh: str) -> tuple[np.ndarray, np.ndarray]:
    from lsf_core.face.avatar import default_rig
    from lsf_core.face.rig import load_rig

    rig = load_rig(neutral_mesh) if neutral_mesh else default_rig()
    return np.asarray(rig.vertices, np.float32), np.asarray(rig.faces, np.int32)


def evaluate(out_bag: str | Path, out_dir: str | Path, truth: str | None = None, audio: str | None = None,
             offline: str | None = None, run_offline: bool = True, phones: str | None = None,
             model: str = "realtime", neutral_mesh: str = "", lip: str | None = None, upper: str | None = None,
             face_ns: str = "/face", audio_topic: str | None = None, sample_rate: int = 16000, channels: int = 1,
             video: bool = True, video_size: int = 480) -> dict:
    """Output bag (+ ground truth, + offline result) -> metrics.json, report.md, PNG plots and MP4s."""

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    recs, types = B.read_topics(out_bag)
    replay = B.json_records(recs[B.REPLAY_TOPIC])[-1] if recs.get(B.REPLAY_TOPIC) else None
    topic = B.find_audio_topic(types, audio_topic or (replay or {}).get("audio_topic"))
    info = [r for t, m in types.items() if m == B.INFO_TYPE for r in recs[t]]
    stream = B.decode_audio(recs[topic], types[topic], sample_rate, channels, info)
    ns = face_ns.rstrip("/")
    bl = B.joint_track(recs.get(f"{ns}/blendshapes", []))
    offs = B.cloud_track(recs.get(f"{ns}/vertex_offsets", []))
    if bl.stamps.size < 2:
        raise ValueError(f"{out_bag}: {bl.stamps.size} messages on {ns}/blendshapes; nothing to evaluate "
                         f"(topics: {', '.join(sorted(types))})")
    rate = float(1.0 / np.median(np.diff(np.unique(bl.stamps))))

    if replay and replay.get("clips"):
        clips = [Clip(c["name"], c["start"] + replay["offset"], c["duration"], [M.Phone(*p) for p in c["phones"]])
                 for c in replay["clips"]]
    else:
        clips = _segments(stream)
    _attach_truth(clips, truth, replay)
    if phones:
        clips[0].phones = M.load_phones(phones)
    lip_idx = load_indices(lip) if lip else None
    upper_idx = load_indices(upper) if upper else None

    offline_arrays: dict | None = dict(np.load(offline, allow_pickle=False)) if offline else None
    mesh: tuple[np.ndarray, np.ndarray] | None = None
    if offline_arrays is not None and "faces" in offline_arrays:
        mesh = (offline_arrays["neutral"], offline_arrays["faces"])
    results: dict = {"summary": {}, "clips": []}
    images: list[Path] = []
    videos: list[Path] = []
    all_latency = bl.recv - bl.stamps
    for i, clip in enumerate(clips):
        res: dict = {"name": clip.name}
        lo, hi = clip.start - 0.5 / rate, clip.start + clip.duration + 0.5 / rate
        sel = (bl.stamps >= lo) & (bl.stamps < hi)
        t_rel = bl.stamps[sel] - clip.start
        values = bl.values[sel]
        res["frames"] = M.frame_counts(bl.stamps[sel], rate, clip.start, clip.start + clip.duration)
        res["frames"]["duration_s"] = clip.duration
        res["latency"] = M.latency_stats(bl.recv[sel] - bl.stamps[sel])
        osel = (offs.stamps >= lo) & (offs.stamps < hi)
        clip_audio = _clip_audio(stream, clip)
        curves = [R.Curves("streamed", t_rel, bl.names, values)]

        off = None
        if offline_arrays is not None and i == 0:
            off = offline_arrays
        elif run_offline:
            # started where the node started this stream (its first frame's stamp): the same liveliness draws
            start = float(bl.stamps[sel][0]) if sel.any() else clip.start
            off = _offline(audio if (audio and i == 0) else None, clip_audio, stream.sample_rate, model,
                           neutral_mesh, rate, start)
            off["times"] = off["times"] + (start - clip.start)
        if off is not None:
            mesh = mesh or (off["neutral"], off["faces"])
            names = [str(n) for n in off["blendshape_names"]]
            ref = M.resample_track(off["times"], off["blendshapes"], t_rel)
            agree = M.blendshape_error(values, bl.names, ref, names)
            cols, ref_cols, _ = M.shared_columns(bl.names, names)
            lag = M.best_lag(t_rel, values[:, cols], off["times"], off["blendshapes"][:, ref_cols])
            agree["lag_ms"] = round(1000.0 * lag, 1)
            if osel.any() and off["vertex_offsets"].shape[1] == offs.values.shape[1]:
                ref_v = M.resample_track(off["times"], off["vertex_offsets"], offs.stamps[osel] - clip.start)
                agree["vertex_offset_mve_mm"] = 1000.0 * M.mve(offs.values[osel], ref_v)
            res["offline_agreement"] = agree
            curves.append(R.Curves("offline", np.asarray(off["times"]), names, off["blendshapes"], "--"))
            if clip.phones:
                res["lip_sync_offline"] = M.lip_sync_checks(off["times"], off["blendshapes"], names, clip.phones)
        if clip.phones:
            res["lip_sync"] = M.lip_sync_checks(t_rel, values, bl.names, clip.phones)
        if clip.truth is not None:
            res.update(_truth_metrics(clip.truth, t_rel, bl, sel, offs, osel, clip.start, lip_idx, upper_idx))
            if clip.truth.blendshapes is not None:
                curves.append(R.Curves("truth", clip.truth.times, clip.truth.blendshape_names,
                                       clip.truth.blendshapes, ":"))
        images.append(R.plot_clip(out_dir / f"clip{i}_{clip.name}_blendshapes.png", clip_audio, stream.sample_rate,
                                  curves, clip.phones, title=clip.name))
        if video and osel.any():
            res["video"] = _video(out_dir / f"clip{i}_{clip.name}.mp4", offs.values[osel], mesh, neutral_mesh,
                                  rate, clip_audio, stream.sample_rate, video_size, videos)
        results["clips"].append(res)

    images.append(R.plot_latency(out_dir / "latency.png", 1000.0 * all_latency))
    frames = [c["frames"] for c in results["clips"]]
    results["summary"] = {
        "bag": str(out_bag), "rate_hz": rate, "clips": len(clips), "frames": int(bl.stamps.size),
        "expected_frames": sum(f.get("expected", 0) for f in frames),
        "dropped_frames": sum(f["dropped"] for f in frames),
        "duplicated_frames": sum(f["duplicated"] for f in frames),
        "latency": M.latency_stats(all_latency),
        "replay": {k: v for k, v in (replay or {}).items() if k != "clips"},
        "node_diagnostics": _diagnostics(recs.get("/diagnostics", [])),
    }
    R.write_json(out_dir / "metrics.json", results)
    R.write_markdown(out_dir / "report.md", results, images, videos)
    return results


def _offline(audio_path: str | None, clip_audio: np.ndarray, sample_rate: int, model: str, neutral_mesh: str,
             rate: float, start: float) -> dict:
    """The offline result (``lsf infer``) on the same audio, its stream started at ``start`` (times relative
    to it)."""
    import soundfile as sf

    from lsf_core.runtime.infer import infer_file

    rate = float(np.clip(rate, 25.0, 120.0))
    if audio_path:
        return infer_file(audio_path, model=model, neutral_mesh=neutral_mesh, rate=rate, start=start)
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "clip.wav"
        sf.write(str(wav), clip_audio, sample_rate)
        return infer_file(wav, model=model, neutral_mesh=neutral_mesh, rate=rate, start=start)


def _truth_metrics(truth: Truth, t_rel: np.ndarray, bl: B.Track, sel: np.ndarray, offs: B.Track,
                   osel: np.ndarray, start: float, lip: np.ndarray | None, upper: np.ndarray | None) -> dict:
    out: dict = {}
    if truth.blendshapes is not None and t_rel.size:
        ref = M.resample_track(truth.times, truth.blendshapes, t_rel)
        out["truth_blendshapes"] = M.blendshape_error(bl.values[sel], bl.names, ref, truth.blendshape_names)
    if truth.vertices is not None:
        if not osel.any():
            out["truth_vertices"] = {"skipped": "no vertex offsets recorded"}
        elif truth.template is None:
            out["truth_vertices"] = {"skipped": "ground truth has no template (neutral) to add offsets to"}
        elif truth.template.shape[0] != offs.values.shape[1]:
            out["truth_vertices"] = {"skipped": f"topologies differ: prediction {offs.values.shape[1]} vertices, "
                                                f"ground truth {truth.template.shape[0]}"}
        else:
            pred = truth.template[None] + M.resample_track(offs.stamps[osel] - start, offs.values[osel], truth.times)
            lip = lip if lip is not None else truth.lip
            upper = upper if upper is not None else truth.upper
            vm = M.vertex_metrics(pred, truth.vertices, truth.template, lip, upper)
            vm["units"] = "mve m, lve m^2, fdd m^2"
            out["truth_vertices"] = vm
    return out


def _video(path: Path, offsets: np.ndarray, mesh: tuple | None, neutral_mesh: str, fps: float,
           audio: np.ndarray, sample_rate: int, size: int, videos: list[Path]) -> str:

    try:
        neutral, faces = mesh if mesh is not None else _rig_mesh(neutral_mesh)
        if neutral.shape[0] != offsets.shape[1]:
            return f"skipped: the mesh has {neutral.shape[0]} vertices, the offsets {offsets.shape[1]}"
        R.render_clip(path, neutral[None] + offsets, faces, fps, audio, sample_rate, size)
    except ImportError as err:      # the renderer or rig module is not part of this install
        return f"skipped: {err}"
    videos.append(path)
    return path.name
