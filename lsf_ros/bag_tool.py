"""``lsf-bag``: evaluate a face animation node with rosbag2 bags (no ros2 CLI needed).

  lsf-bag make CLIP... -o BAG      audio files (+ ground truth, phone labels) -> an evaluation bag
  lsf-bag replay BAG -o OUT_BAG    publish a bag's audio into the running graph, record the face topics
  lsf-bag eval OUT_BAG -o DIR      metrics JSON + Markdown report with plots and an MP4

Ground-truth NPZ (per clip, all keys optional but one motion): ``fps`` or ``times`` (T,) s;
``blendshapes`` (T, K) + ``blendshape_names``; ``flame`` (T, 53); ``vertices`` (T, V, 3) metres, or
``vertex_offsets`` + ``neutral`` (the ``lsf infer`` layout); ``template`` (V, 3); ``lip_indices`` and
``upper_indices`` (vertex index lists). Phone labels: text ``start end phone`` per line, or JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lsf_core import metrics as M
from lsf_core.audio import AudioError
from lsf_ros import bag_io as B

FACE_TOPICS = ("blendshapes", "vertex_offsets", "flame", "neutral")
DEFAULT_CLASSES = {"blendshapes": "sensor_msgs/msg/JointState", "vertex_offsets": "sensor_msgs/msg/PointCloud2",
                   "flame": "sensor_msgs/msg/JointState", "neutral": "visualization_msgs/msg/Marker",
                   "mesh": "visualization_msgs/msg/Marker", "joint_commands": "sensor_msgs/msg/JointState",
                   "diagnostics": "diagnostic_msgs/msg/DiagnosticArray"}
SEGMENT_GAP = 0.5      # s of missing audio that separates two clips in a bag without a clip list


# ---- ground truth ---------------------------------------------------------------------------------

@dataclass
class Truth:
    times: np.ndarray                              # (T,) s from the clip start
    blendshapes: np.ndarray | None = None          # (T, K)
    blendshape_names: list[str] = field(default_factory=list)
    flame: np.ndarray | None = None                # (T, 53)
    vertices: np.ndarray | None = None             # (T, V, 3) absolute, metres
    template: np.ndarray | None = None             # (V, 3)
    lip: np.ndarray | None = None
    upper: np.ndarray | None = None
    phones: list[M.Phone] = field(default_factory=list)


def load_truth_npz(path: str | Path) -> Truth:
    path = Path(path)
    try:
        z = dict(np.load(path, allow_pickle=False))
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot read ground-truth NPZ ({err})") from err
    vertices = z.get("vertices")
    template = z.get("template", z.get("neutral"))
    if vertices is None and "vertex_offsets" in z:
        if template is None:
            raise ValueError(f"{path}: 'vertex_offsets' needs 'neutral' (or 'template') to give vertices")
        vertices = z["vertex_offsets"] + template[None]
    motions = {k: z[k] for k in ("blendshapes", "flame") if k in z}
    if vertices is not None:
        motions["vertices"] = vertices
    if not motions:
        raise ValueError(f"{path}: ground truth needs 'blendshapes', 'flame', 'vertices' or 'vertex_offsets'")
    lengths = {k: v.shape[0] for k, v in motions.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"{path}: motion arrays disagree on the frame count: {lengths}")
    n = next(iter(lengths.values()))
    if "times" in z:
        times = np.asarray(z["times"], np.float64)
    elif "fps" in z:
        times = np.arange(n) / float(z["fps"])
    else:
        raise ValueError(f"{path}: ground truth needs 'fps' or 'times'")
    if times.shape != (n,):
        raise ValueError(f"{path}: 'times' has {times.shape[0]} entries for {n} frames")
    if "blendshapes" in z and "blendshape_names" not in z:
        raise ValueError(f"{path}: 'blendshapes' needs 'blendshape_names'")
    phones = []
    if "phone_labels" in z:
        spans = np.asarray(z["phone_times"], np.float64).reshape(-1, 2)
        phones = [M.Phone(float(s), float(e), str(lab)) for (s, e), lab in zip(spans, z["phone_labels"])]
    return Truth(times, z.get("blendshapes"), [str(s) for s in z.get("blendshape_names", [])], z.get("flame"),
                 vertices, template, z.get("lip_indices"), z.get("upper_indices"), phones)


def load_indices(path: str | Path) -> np.ndarray:
    """Vertex index list from .npy, .json or whitespace/comma separated text."""
    path = Path(path)
    try:
        if path.suffix == ".npy":
            idx = np.load(path, allow_pickle=False)
        elif path.suffix == ".json":
            idx = np.asarray(json.loads(path.read_text()))
        else:
            idx = np.asarray(path.read_text().replace(",", " ").split(), np.int64)
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot read a vertex index list ({err})") from err
    return np.asarray(idx, np.int64).ravel()


# ---- make -----------------------------------------------------------------------------------------

def make_bag(clips: list[str], out: str | Path, truths: list[str] | None = None, phones: list[str] | None = None,
             audio_type: str = "std_msgs/Int16MultiArray", topic: str = "/audio", info_topic: str = "/audio_info",
             chunk: float = 0.032, sample_rate: int = 16000, storage: str = "mcap", gap: float = 1.0,
             start: float | None = None) -> dict:
    """Audio clips -> one bag, clips one after another with ``gap`` s of no audio in between."""
    from tqdm import tqdm

    from lsf_core.audio import load_audio

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


# ---- replay ---------------------------------------------------------------------------------------

def ros_env_defaults() -> str:
    """Loopback discovery unless the user chose otherwise; returns the domain id in use."""
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    return os.environ.get("ROS_DOMAIN_ID", "0")


def _msg_class(msgtype: str) -> type:
    import importlib

    pkg, _, name = msgtype.partition("/msg/")
    try:
        return getattr(importlib.import_module(f"{pkg}.msg"), name)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"message type {msgtype} is not importable here ({err}); install its ROS package "
                         "(e.g. audio_common_msgs) to replay it") from err


def _sub_qos(node: Any, topic: str) -> Any:
    """A subscription QoS every publisher of ``topic`` can serve: reliable only if all are, transient
    local if any is (for latched topics such as face/neutral)."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    infos = node.get_publishers_info_by_topic(topic)
    reliable = bool(infos) and all(i.qos_profile.reliability == ReliabilityPolicy.RELIABLE for i in infos)
    latched = any(i.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for i in infos)
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,
                      reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)


def replay_bag(bag: str | Path, out: str | Path, rate_factor: float = 1.0, tail: float = 1.5,
               audio_topic: str | None = None, publish_topic: str | None = None, info_topic: str | None = None,
               face_ns: str = "/face", extra_topics: tuple[str, ...] = ("/diagnostics",), wait: float = 30.0,
               restamp: bool = True, storage: str = "mcap", quiet: bool = False) -> dict:
    """Publish the bag's audio (paced like a live source) and record the face topics into ``out``."""
    if not 0.05 <= rate_factor <= 20.0:
        raise ValueError(f"rate factor must be within 0.05..20, got {rate_factor}")
    domain = ros_env_defaults()
    with B.open_reader(bag) as reader:
        types = {c.topic: c.msgtype for c in reader.connections}
        topic = B.find_audio_topic(types, audio_topic)
        msgtype = types[topic]
        ts = B.reader_typestore(reader)
        conns = [c for c in reader.connections if c.topic == topic]
        messages = [(t_ns * 1e-9, bytes(raw)) for _, t_ns, raw in reader.messages(connections=conns)]
        info_conns = [c for c in reader.connections if c.msgtype == B.INFO_TYPE]
        info_raw = [bytes(raw) for _, _, raw in reader.messages(connections=info_conns)] if info_conns else []
        clip_conns = [c for c in reader.connections if c.topic == B.CLIPS_TOPIC]
        clips = [json.loads(ts.deserialize_cdr(raw, c.msgtype).data)
                 for c, _, raw in reader.messages(connections=clip_conns)] if clip_conns else []
    if not messages:
        raise ValueError(f"{bag}: no messages on the audio topic {topic}")
    stamped = _is_stamped(msgtype)

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    log = (lambda *a: None) if quiet else (lambda *a: print(*a, file=sys.stderr, flush=True))
    log(f"lsf-bag replay: ROS_DOMAIN_ID={domain} ROS_AUTOMATIC_DISCOVERY_RANGE="
        f"{os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE']}")
    context = rclpy.Context()
    rclpy.init(context=context)
    executor = None
    try:
        node = Node("lsf_bag_replay", context=context)
        publish_topic = publish_topic or topic
        pub = node.create_publisher(_msg_class(msgtype), publish_topic,
                                    QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=50,
                                               reliability=ReliabilityPolicy.BEST_EFFORT))
        if info_raw:
            latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                 durability=DurabilityPolicy.TRANSIENT_LOCAL)
            node.create_publisher(_msg_class(B.INFO_TYPE), info_topic or "/audio_info", latched).publish(info_raw[-1])
        face_topics = [f"{face_ns.rstrip('/')}/{t}" for t in FACE_TOPICS] + list(extra_topics)
        log(f"waiting up to {wait:g} s for a subscriber on {publish_topic} ...")
        deadline = time.monotonic() + wait
        while pub.get_subscription_count() == 0 or not _visible(node, face_topics[0]):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no subscriber on {publish_topic} (or no publisher of {face_topics[0]}) "
                                   f"after {wait:g} s; is the animator running with ROS_DOMAIN_ID={domain}?")
            time.sleep(0.1)
        graph = dict(node.get_topic_names_and_types())
        lock = threading.Lock()
        last_frame = [time.monotonic()]
        counts: dict[str, int] = {}
        with B.BagWriter(out, storage, B.adapter_type(msgtype)) as w:
            for t in face_topics:
                mtype = graph.get(t, [DEFAULT_CLASSES.get(t.rsplit("/", 1)[-1], "")])[0]
                if not mtype or mtype not in w.ts.fielddefs:
                    log(f"not recording {t}: type {mtype or 'unknown'} is not known here")
                    continue
                qos_profile = _sub_qos(node, t)
                w.connect(t, mtype, B.LATCHED_QOS if qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL
                          else B.FRAME_QOS)
                counts[t] = 0

                def on_msg(raw: bytes, t: str = t) -> None:
                    now = time.time()
                    with lock:
                        w.write_raw(t, raw, now)
                        counts[t] += 1
                    last_frame[0] = time.monotonic()

                node.create_subscription(_msg_class(mtype), t, on_msg, qos_profile, raw=True)
            w.connect(publish_topic, msgtype, B.SENSOR_QOS)
            executor = SingleThreadedExecutor(context=context)
            executor.add_node(node)
            spinner = threading.Thread(target=executor.spin, daemon=True)
            spinner.start()
            time.sleep(0.5)                     # let the new subscriptions match their publishers
            log(f"publishing {len(messages)} {B.adapter_type(msgtype)} messages on {publish_topic} "
                f"at {rate_factor:g}x real time")
            wall0, bag0 = time.time(), messages[0][0]
            offset = wall0 - bag0
            for log_time, raw in messages:
                target = wall0 + (log_time - bag0) / rate_factor
                delay = target - time.time()
                if delay > 0:
                    time.sleep(delay)
                if stamped and restamp:
                    raw = _restamp(ts, raw, msgtype, offset)
                pub.publish(raw)
                with lock:
                    w.write_raw(publish_topic, raw, time.time())
            end = time.monotonic()
            while time.monotonic() < end + tail + 30.0:
                if time.monotonic() > end + tail and time.monotonic() - last_frame[0] > 0.5:
                    break
                time.sleep(0.05)
            executor.shutdown(timeout_sec=1.0)      # no more callbacks into the writer
            summary = {"source": str(Path(bag).resolve()), "audio_topic": publish_topic,
                       "audio_type": B.adapter_type(msgtype), "rate_factor": rate_factor, "offset": offset,
                       "restamped": bool(stamped and restamp), "published": len(messages),
                       "clips": clips, "received": dict(counts), "domain_id": domain}
            w.write(B.REPLAY_TOPIC, B.string_msg(w.ts, summary), wall0, B.LATCHED_QOS)
        return summary
    finally:
        if executor is not None:
            executor.shutdown(timeout_sec=1.0)
        rclpy.try_shutdown(context=context)


def _is_stamped(msgtype: str) -> bool:
    from lsf_ros.audio_adapters import ADAPTERS

    return bool(ADAPTERS[B.adapter_type(msgtype)].stamped)


def _visible(node: Any, topic: str) -> bool:
    return node.count_publishers(topic) > 0


def _restamp(ts: Any, raw: bytes, msgtype: str, offset: float) -> bytes:
    msg = ts.deserialize_cdr(raw, msgtype)
    holder = msg.header if hasattr(msg, "header") else msg
    attr = "stamp" if hasattr(msg, "header") else "timestamp"
    t = getattr(holder, attr)
    ns = int(round((t.sec + t.nanosec * 1e-9 + offset) * 1e9))
    setattr(holder, attr, type(t)(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000))
    return bytes(ts.serialize_cdr(msg, msgtype))


# ---- eval -----------------------------------------------------------------------------------------

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
    if Path(source).is_dir():
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
    from lsf_core.rig import default_rig, load_rig

    rig = load_rig(neutral_mesh) if neutral_mesh else default_rig()
    return np.asarray(rig.vertices, np.float32), np.asarray(rig.faces, np.int32)


def evaluate(out_bag: str | Path, out_dir: str | Path, truth: str | None = None, audio: str | None = None,
             offline: str | None = None, run_offline: bool = True, phones: str | None = None,
             model: str = "realtime", neutral_mesh: str = "", lip: str | None = None, upper: str | None = None,
             face_ns: str = "/face", audio_topic: str | None = None, sample_rate: int = 16000, channels: int = 1,
             video: bool = True, video_size: int = 480) -> dict:
    """Output bag (+ ground truth, + offline result) -> metrics.json, report.md, PNG plots and MP4s."""
    from lsf_core import report as R

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
            off = _offline(audio if (audio and i == 0) else None, clip_audio, stream.sample_rate, model,
                           neutral_mesh, rate)
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
             rate: float) -> dict:
    """The offline result (``lsf infer``) on the same audio."""
    import soundfile as sf

    from lsf_core.infer import infer_file

    rate = float(np.clip(rate, 25.0, 120.0))
    if audio_path:
        return infer_file(audio_path, model=model, neutral_mesh=neutral_mesh, rate=rate)
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "clip.wav"
        sf.write(str(wav), clip_audio, sample_rate)
        return infer_file(wav, model=model, neutral_mesh=neutral_mesh, rate=rate)


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
    from lsf_core import report as R

    try:
        neutral, faces = mesh if mesh is not None else _rig_mesh(neutral_mesh)
        if neutral.shape[0] != offsets.shape[1]:
            return f"skipped: the mesh has {neutral.shape[0]} vertices, the offsets {offsets.shape[1]}"
        R.render_clip(path, neutral[None] + offsets, faces, fps, audio, sample_rate, size)
    except ImportError as err:      # the renderer or rig module is not part of this install
        return f"skipped: {err}"
    videos.append(path)
    return path.name


# ---- command line ---------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    from lsf_ros.audio_adapters import ADAPTERS, DEFAULT_AUDIO_TYPE

    fmt = argparse.ArgumentDefaultsHelpFormatter
    p = argparse.ArgumentParser(
        prog="lsf-bag", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Evaluate a face animation node with rosbag2 bags (no ros2 CLI needed): make a bag from audio "
                    "clips, replay it into the running graph while recording the face topics, evaluate the "
                    "recording.",
        epilog="Processes default to ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST; set ROS_DOMAIN_ID to the animator's.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    m = sub.add_parser("make", help="audio clips (+ ground truth, phone labels) -> rosbag2 bag", formatter_class=fmt)
    m.add_argument("clips", nargs="+", help="audio files (wav, flac, ogg, mp3, ...)")
    m.add_argument("-o", "--out", required=True, help="output bag directory (must not exist)")
    m.add_argument("--truth", nargs="+", help="ground-truth NPZ per clip (see lsf_ros/bag_tool.py docstring)")
    m.add_argument("--phones", nargs="+", help="phone label file per clip ('start end phone' lines, or JSON)")
    m.add_argument("--audio-type", default=DEFAULT_AUDIO_TYPE, choices=list(ADAPTERS), help="audio message type")
    m.add_argument("--topic", default="/audio", help="audio topic")
    m.add_argument("--info-topic", default="/audio_info", help="AudioInfo topic (ros-drivers audio_common types)")
    m.add_argument("--chunk", type=float, default=0.032, help="seconds of audio per message")
    m.add_argument("--sample-rate", type=int, default=16000, help="audio is resampled to this rate")
    m.add_argument("--storage", default="mcap", choices=list(B.STORAGES), help="rosbag2 storage plugin")
    m.add_argument("--gap", type=float, default=1.0, help="seconds without audio between clips")
    m.add_argument("--start", type=float, default=None, help="bag start time (s since epoch; default: now)")

    r = sub.add_parser("replay", help="publish a bag's audio into the graph, record the face topics",
                       formatter_class=fmt)
    r.add_argument("bag", help="input bag (from lsf-bag make or ros2 bag record)")
    r.add_argument("-o", "--out", required=True, help="output bag directory (must not exist)")
    r.add_argument("--rate-factor", type=float, default=1.0,
                   help="playback speed (1 = real time; latency figures are only meaningful at 1)")
    r.add_argument("--tail", type=float, default=1.5, help="seconds to keep recording after the last audio")
    r.add_argument("--audio-topic", default=None, help="audio topic in the bag (default: the one audio topic)")
    r.add_argument("--publish-topic", default=None, help="publish the audio here (default: its bag topic)")
    r.add_argument("--info-topic", default="/audio_info", help="publish the bag's AudioInfo here")
    r.add_argument("--face-ns", default="/face", help="namespace of the face topics to record")
    r.add_argument("--record", nargs="*", default=["/diagnostics"], help="further topics to record")
    r.add_argument("--wait", type=float, default=30.0, help="seconds to wait for the animator")
    r.add_argument("--keep-stamps", action="store_true",
                   help="publish stamped audio with its recorded stamps (default: shifted to now)")
    r.add_argument("--storage", default="mcap", choices=list(B.STORAGES), help="rosbag2 storage plugin")

    e = sub.add_parser("eval", help="output bag -> metrics JSON + report (plots, video)", formatter_class=fmt)
    e.add_argument("bag", help="bag recorded by lsf-bag replay (or any bag with audio and face topics)")
    e.add_argument("-o", "--out", required=True, help="report directory")
    e.add_argument("--truth", default=None, help="ground truth: a bag from lsf-bag make, or an NPZ (one clip); "
                                                 "default: the replayed bag when it exists")
    e.add_argument("--audio", default=None, help="audio file of the (first) clip for the offline result")
    e.add_argument("--offline", default=None, help="offline result NPZ (lsf infer) of the first clip")
    e.add_argument("--no-offline", action="store_true", help="do not run the offline model for agreement")
    e.add_argument("--phones", default=None, help="phone labels of the first clip")
    e.add_argument("--model", default="realtime", help="model of the offline result (as the node ran)")
    e.add_argument("--neutral-mesh", default="", help="rig of the node (as the node ran); default avatar")
    e.add_argument("--lip-indices", default=None, help="lip-region vertex indices (.npy/.json/.txt)")
    e.add_argument("--upper-indices", default=None, help="upper-face vertex indices (.npy/.json/.txt)")
    e.add_argument("--face-ns", default="/face", help="namespace of the face topics")
    e.add_argument("--audio-topic", default=None, help="audio topic in the bag")
    e.add_argument("--sample-rate", type=int, default=16000, help="rate of audio messages that carry none")
    e.add_argument("--channels", type=int, default=1, help="channels of audio messages that carry none")
    e.add_argument("--no-video", action="store_true", help="skip the MP4")
    e.add_argument("--video-size", type=int, default=480, help="video width and height in pixels")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "make":
            s = make_bag(args.clips, args.out, args.truth, args.phones, args.audio_type, args.topic, args.info_topic,
                         args.chunk, args.sample_rate, args.storage, args.gap, args.start)
            print(f"wrote {s['bag']}: {len(s['clips'])} clips, {sum(c['chunks'] for c in s['clips'])} "
                  f"{s['audio_type']} messages on {s['topic']}")
        elif args.command == "replay":
            s = replay_bag(args.bag, args.out, args.rate_factor, args.tail, args.audio_topic, args.publish_topic,
                           args.info_topic, args.face_ns, tuple(args.record), args.wait, not args.keep_stamps,
                           args.storage)
            print(f"wrote {args.out}: published {s['published']} audio messages; received "
                  + ", ".join(f"{n} on {t}" for t, n in s["received"].items()))
        else:
            res = evaluate(args.bag, args.out, args.truth, args.audio, args.offline, not args.no_offline,
                           args.phones, args.model, args.neutral_mesh, args.lip_indices, args.upper_indices,
                           args.face_ns, args.audio_topic, args.sample_rate, args.channels, not args.no_video,
                           args.video_size)
            s = res["summary"]
            lat = s["latency"]
            print(f"wrote {args.out}/metrics.json and report.md: {s['frames']} frames "
                  f"({s['expected_frames']} expected) at {s['rate_hz']:.1f} Hz, dropped {s['dropped_frames']}, "
                  f"duplicated {s['duplicated_frames']}, latency p50 {lat.get('p50_ms', float('nan')):.0f} ms "
                  f"p95 {lat.get('p95_ms', float('nan')):.0f} ms")
    except (ValueError, FileExistsError, TimeoutError, OSError) as err:
        print(f"lsf-bag {args.command}: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
