"""``lsf-bag make``: audio files (+ ground truth, phone labels) -> an evaluation bag, and its truth read back."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from lsf_core.audio import AudioError, load_audio
from lsf_core.evaluation import metrics as M
from lsf_core.evaluation.truth import Truth, load_truth_npz
from lsf_ros.bags import io as B


def make_bag(clips: list[str], out: str | Path, truths: list[str] | None = None, phones: list[str] | None = None,
             audio_type: str = "std_msgs/Int16MultiArray", topic: str = "/audio", info_topic: str = "/audio_info",
             chunk: float = 0.032, sample_rate: int = 16000, storage: str = "mcap", gap: float = 1.0,
             start: float | None = None) -> dict:
    """Audio clips -> one bag, clips one after another with ``gap`` s of no audio in between."""
    from tqdm import tqdm


    for name, items in (("--truth", truths), ("--phones", phones)):
        if items and len(items) != len(clips):
            raise ValueError(f"{name} takes one file per clip: {len(items)} given for {len(clips)} clips")
    if not 0.005 <= chunk <= 1.0:
        raise ValueError(f"chunk must be within 0.005..1 s, got {chunk}")
    t = time.time() if start is None else float(start)
    summary: dict = {"bag": str(out), "audio_type": audio_type, "topic": topic, "clips": []}
    with B.BagWriter(out, storage, audio_type) as w:
        ts = w.ts
        if B.adapter_type(audio_type) in ("audio_common_msgs/AudioData", "audio_common_msgs/AudioDataStamped"):
            w.write(info_topic, B.audio_info(ts, sample_rate, 1), t, B.LATCHED_QOS)
        for i, clip in enumerate(tqdm(clips, desc="clips", unit="clip", disable=len(clips) < 2)):
            pcm = np.clip(np.round(load_audio(clip, sample_rate) * 32767.0), -32768, 32767).astype(np.int16)
            if pcm.size == 0:
                raise AudioError(f"{clip}: the file holds no samples")
            truth = load_truth_npz(truths[i]) if truths else None
            labels = M.load_phones(phones[i]) if phones else (truth.phones if truth else [])
            duration = pcm.size / sample_rate
            info = {"name": Path(clip).stem, "source": str(clip), "start": t, "duration": duration,
                    "sample_rate": sample_rate, "phones": [[p.start, p.end, p.label] for p in labels]}
            w.write(B.CLIPS_TOPIC, B.string_msg(ts, info), t, B.LATCHED_QOS)
            n = max(1, int(round(chunk * sample_rate)))
            for k in range(0, pcm.size, n):
                piece = pcm[k:k + n]
                stamp = t + k / sample_rate
                w.write(topic, B.encode_audio(ts, audio_type, piece[:, None], sample_rate, stamp),
                        stamp + piece.size / sample_rate, B.SENSOR_QOS)
            if truth is not None:
                _write_truth(w, truth, t)
            summary["clips"].append({"name": info["name"], "duration": duration, "chunks": -(-pcm.size // n),
                                     "truth": truth is not None, "phones": len(labels)})
            t += duration + gap
    return summary


def _write_truth(w: B.BagWriter, truth: Truth, t0: float) -> None:
    ts = w.ts
    if truth.template is not None:
        w.write(B.TRUTH_NEUTRAL, B.point_cloud(ts, truth.template, t0), t0, B.LATCHED_QOS)
    regions = {k: np.asarray(v).astype(int).tolist() for k, v in (("lip", truth.lip), ("upper", truth.upper))
               if v is not None}
    if regions:
        w.write(B.TRUTH_REGIONS, B.string_msg(ts, regions), t0, B.LATCHED_QOS)
    for j, rel in enumerate(truth.times):
        stamp = t0 + float(rel)
        if truth.blendshapes is not None:
            w.write(B.TRUTH_BLENDSHAPES, B.joint_state(ts, truth.blendshape_names, truth.blendshapes[j], stamp), stamp)
        if truth.flame is not None:
            names = [f"exp{i}" for i in range(50)] + ["jaw0", "jaw1", "jaw2"]
            w.write(B.TRUTH_FLAME, B.joint_state(ts, names[:truth.flame.shape[1]], truth.flame[j], stamp), stamp)
        if truth.vertices is not None:
            w.write(B.TRUTH_VERTICES, B.point_cloud(ts, truth.vertices[j], stamp), stamp)


def truths_from_bag(path: str | Path) -> list[tuple[dict, Truth | None]]:
    """(clip info, ground truth on the clip clock) for every clip of a ``make`` bag."""
    recs, _ = B.read_topics(path, [B.CLIPS_TOPIC, B.TRUTH_BLENDSHAPES, B.TRUTH_FLAME, B.TRUTH_VERTICES,
                                   B.TRUTH_NEUTRAL, B.TRUTH_REGIONS])
    clips = B.json_records(recs.get(B.CLIPS_TOPIC, []))
    bl, fl = B.joint_track(recs.get(B.TRUTH_BLENDSHAPES, [])), B.joint_track(recs.get(B.TRUTH_FLAME, []))
    vt = B.cloud_track(recs.get(B.TRUTH_VERTICES, []))
    neutral = [(r.log_time, B.cloud_points(r.msg)) for r in recs.get(B.TRUTH_NEUTRAL, [])]
    regions = [(r.log_time, json.loads(r.msg.data)) for r in recs.get(B.TRUTH_REGIONS, [])]
    out = []
    for c in clips:
        s, e = c["start"], c["start"] + c["duration"] + 1e-6

        tracks = {"v": vt, "b": bl, "f": fl}
        sel = {k: (tr.stamps >= s - 1e-6) & (tr.stamps < e) for k, tr in tracks.items()}
        phones = [M.Phone(*p) for p in c.get("phones", [])]
        key = next((k for k in ("v", "b", "f") if sel[k].any()), None)
        if key is None:
            out.append((c, Truth(np.zeros(0), phones=phones) if phones else None))
            continue
        times = tracks[key].stamps[sel[key]] - s
        tmpl = next((v for t, v in neutral if s - 1e-6 <= t < e), None)
        reg = next((v for t, v in regions if s - 1e-6 <= t < e), {})
        out.append((c, Truth(times,
                             bl.values[sel["b"]] if sel["b"].any() else None, bl.names,
                             fl.values[sel["f"]] if sel["f"].any() else None,
                             vt.values[sel["v"]] if sel["v"].any() else None, tmpl,
                             np.asarray(reg["lip"]) if "lip" in reg else None,
                             np.asarray(reg["upper"]) if "upper" in reg else None, phones)))
    return out
