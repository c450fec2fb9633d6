"""rosbag2 bags without a ROS install: the pure-Python ``rosbags`` library, our audio types, our topics.

Bags written here follow what ``ros2 bag record`` writes (rosbag2 version 9, mcap by default or sqlite3,
offered QoS profiles in metadata.yaml), so ``ros2 bag play`` replays them. Audio packages outside the
ROS 2 type store (both ``audio_common_msgs`` variants, ``foxglove_msgs/RawAudio``) are registered from
their .msg text; bags carry their own definitions, which are preferred when reading.

Topics of an evaluation bag (``lsf-bag make``): the audio topic; ``/lsf_bag/clips`` (std_msgs/String,
JSON per clip: name, start, duration, sample_rate, phones); ground truth on ``/truth/blendshapes`` and
``/truth/flame`` (JointState), ``/truth/vertices`` (PointCloud2 xyz, absolute, metres),
``/truth/neutral`` (PointCloud2, once) and ``/truth/regions`` (String JSON: lip / upper index lists).
Header stamps and receive times are on one clock: a chunk's stamp is the capture time of its first
sample; its receive time is when its last sample was captured.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from lsf_core.audio import AudioError
from lsf_ros.audio_adapters import ADAPTERS, MGONZS13_FORMATS

CLIPS_TOPIC = "/lsf_bag/clips"
REPLAY_TOPIC = "/lsf_bag/replay"
TRUTH_BLENDSHAPES = "/truth/blendshapes"
TRUTH_FLAME = "/truth/flame"
TRUTH_VERTICES = "/truth/vertices"
TRUTH_NEUTRAL = "/truth/neutral"
TRUTH_REGIONS = "/truth/regions"
STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}

_HEADER = "std_msgs/Header header\n"
_ROS_DRIVERS = {
    "audio_common_msgs/msg/AudioData": "uint8[] data\n",
    "audio_common_msgs/msg/AudioDataStamped": _HEADER + "audio_common_msgs/AudioData audio\n",
    "audio_common_msgs/msg/AudioInfo": "uint8 channels\nuint32 sample_rate\nstring sample_format\n"
                                       "uint32 bitrate\nstring coding_format\n",
}
_MGONZS13 = {
    "audio_common_msgs/msg/AudioData": "float32[] float32_data\nint32[] int32_data\nint16[] int16_data\n"
                                       "int8[] int8_data\nuint8[] uint8_data\n",
    "audio_common_msgs/msg/AudioInfo": "int32 format\nint32 channels\nint32 rate\nint32 chunk\n",
    "audio_common_msgs/msg/Audio": "audio_common_msgs/AudioData audio_data\naudio_common_msgs/AudioInfo info\n",
    "audio_common_msgs/msg/AudioStamped": _HEADER + "audio_common_msgs/Audio audio\n",
}
_FOXGLOVE = {
    "foxglove_msgs/msg/RawAudio": "builtin_interfaces/Time timestamp\nuint8[] data\nstring format\n"
                                  "uint32 sample_rate\nuint32 number_of_channels\n",
}
# audio type (adapter name) -> extra definitions it needs
_EXTRA_TYPES = {
    "audio_common_msgs/AudioData": _ROS_DRIVERS, "audio_common_msgs/AudioDataStamped": _ROS_DRIVERS,
    "audio_common_msgs/Audio": _MGONZS13, "audio_common_msgs/AudioStamped": _MGONZS13,
    "foxglove_msgs/RawAudio": _FOXGLOVE,
}
INFO_TYPE = "audio_common_msgs/msg/AudioInfo"   # ros-drivers info topic type

_INFINITE = QosTime(9223372036, 854775807)


def qos(reliable: bool, depth: int, transient_local: bool = False) -> Qos:
    """An offered QoS profile as rosbag2 records it."""
    return Qos(QosHistory.KEEP_LAST, depth, QosReliability.RELIABLE if reliable else QosReliability.BEST_EFFORT,
               QosDurability.TRANSIENT_LOCAL if transient_local else QosDurability.VOLATILE,
               _INFINITE, _INFINITE, QosLiveliness.AUTOMATIC, _INFINITE, False)


SENSOR_QOS = qos(False, 5)                  # audio: sensor-data QoS (best effort)
FRAME_QOS = qos(True, 10)                   # face frames, ground truth
LATCHED_QOS = qos(True, 1, transient_local=True)


def ros_type(audio_type: str) -> str:
    """'std_msgs/Int16MultiArray' -> 'std_msgs/msg/Int16MultiArray'."""
    pkg, _, name = audio_type.partition("/")
    return audio_type if "/msg/" in audio_type else f"{pkg}/msg/{name}"


def adapter_type(msgtype: str) -> str:
    """'std_msgs/msg/Int16MultiArray' -> 'std_msgs/Int16MultiArray'."""
    return msgtype.replace("/msg/", "/")


def typestore(audio_type: str = "") -> Any:
    """The ROS 2 Kilted type store, plus the definitions ``audio_type`` needs."""
    ts = get_typestore(Stores.ROS2_KILTED)
    extra: dict = {}
    for name, text in _EXTRA_TYPES.get(audio_type, {}).items():
        extra.update(get_types_from_msg(text, name))
    if extra:
        ts.register(extra)
    return ts


def _check_audio_type(audio_type: str) -> None:
    if audio_type not in ADAPTERS:
        raise ValueError(f"audio type {audio_type!r} is unknown; choose from {', '.join(ADAPTERS)}")


# ---- writing audio --------------------------------------------------------------------------------

def _time(ts: Any, seconds: float) -> Any:
    ns = int(round(seconds * 1e9))
    return ts.types["builtin_interfaces/msg/Time"](sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def _header(ts: Any, seconds: float, frame_id: str = "") -> Any:
    return ts.types["std_msgs/msg/Header"](stamp=_time(ts, seconds), frame_id=frame_id)


def encode_audio(ts: Any, audio_type: str, pcm: np.ndarray, sample_rate: int, stamp: float) -> Any:
    """(frames, channels) int16 PCM -> one rosbags message of ``audio_type``."""
    _check_audio_type(audio_type)
    pcm = np.asarray(pcm, np.int16).reshape(pcm.shape[0], -1)
    channels = pcm.shape[1]
    T = ts.types
    flat = pcm.ravel()
    raw = flat.astype("<i2").view(np.uint8)
    if audio_type.startswith("std_msgs/"):
        layout = T["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0)
        data = {"std_msgs/Int16MultiArray": flat,
                "std_msgs/Float32MultiArray": flat.astype(np.float32) / 32768.0,
                "std_msgs/UInt8MultiArray": raw}[audio_type]
        return T[ros_type(audio_type)](layout=layout, data=data)
    if audio_type == "audio_common_msgs/AudioData":
        return T["audio_common_msgs/msg/AudioData"](data=raw)
    if audio_type == "audio_common_msgs/AudioDataStamped":
        return T["audio_common_msgs/msg/AudioDataStamped"](
            header=_header(ts, stamp), audio=T["audio_common_msgs/msg/AudioData"](data=raw))
    if audio_type in ("audio_common_msgs/Audio", "audio_common_msgs/AudioStamped"):
        empty = {"float32_data": np.zeros(0, np.float32), "int32_data": np.zeros(0, np.int32),
                 "int8_data": np.zeros(0, np.int8), "uint8_data": np.zeros(0, np.uint8)}
        int16_code = next(code for code, (field, _) in MGONZS13_FORMATS.items() if field == "int16_data")
        audio = T["audio_common_msgs/msg/Audio"](
            audio_data=T["audio_common_msgs/msg/AudioData"](int16_data=flat, **empty),
            info=T["audio_common_msgs/msg/AudioInfo"](format=int16_code, channels=channels, rate=sample_rate,
                                                      chunk=pcm.shape[0]))
        if audio_type == "audio_common_msgs/Audio":
            return audio
        return T["audio_common_msgs/msg/AudioStamped"](header=_header(ts, stamp), audio=audio)
    return T["foxglove_msgs/msg/RawAudio"](timestamp=_time(ts, stamp), data=raw, format="pcm-s16",
                                           sample_rate=sample_rate, number_of_channels=channels)


def audio_info(ts: Any, sample_rate: int, channels: int) -> Any:
    """ros-drivers AudioInfo for raw S16LE PCM (needs the ros-drivers type store)."""
    return ts.types[INFO_TYPE](channels=channels, sample_rate=sample_rate, sample_format="S16LE", bitrate=0,
                               coding_format="wave")


def joint_state(ts: Any, names: list[str], values: np.ndarray, stamp: float, frame_id: str = "face") -> Any:
    z = np.zeros(0, np.float64)
    return ts.types["sensor_msgs/msg/JointState"](header=_header(ts, stamp, frame_id), name=list(names),
                                                  position=np.asarray(values, np.float64).ravel(), velocity=z,
                                                  effort=z)


def point_cloud(ts: Any, xyz: np.ndarray, stamp: float, frame_id: str = "face") -> Any:
    T = ts.types
    xyz = np.ascontiguousarray(xyz, "<f4").reshape(-1, 3)
    fields = [T["sensor_msgs/msg/PointField"](name=n, offset=4 * i, datatype=7, count=1) for i, n in enumerate("xyz")]
    return T["sensor_msgs/msg/PointCloud2"](header=_header(ts, stamp, frame_id), height=1, width=xyz.shape[0],
                                            fields=fields, is_bigendian=False, point_step=12,
                                            row_step=12 * xyz.shape[0], data=xyz.view(np.uint8).ravel(),
                                            is_dense=True)


def string_msg(ts: Any, payload: Any) -> Any:
    return ts.types["std_msgs/msg/String"](data=json.dumps(payload))


class BagWriter:
    """A rosbags Writer with our type store; ``write(topic, msg, log_time)`` adds connections lazily."""

    def __init__(self, path: str | Path, storage: str = "mcap", audio_type: str = ""):
        if storage not in STORAGES:
            raise ValueError(f"storage must be one of {', '.join(STORAGES)}, got {storage!r}")
        path = Path(path)
        if path.exists():
            raise FileExistsError(f"{path}: output bag already exists; choose another path or remove it")
        self.ts = typestore(audio_type)
        self._writer = Writer(path, version=9, storage_plugin=STORAGES[storage])
        self._conns: dict[str, Any] = {}

    def __enter__(self) -> BagWriter:
        self._writer.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self._writer.close()

    def connect(self, topic: str, msgtype: str, profile: Qos = FRAME_QOS) -> None:
        if topic not in self._conns:
            self._conns[topic] = self._writer.add_connection(topic, msgtype, typestore=self.ts,
                                                             offered_qos_profiles=[profile])

    def write(self, topic: str, msg: Any, log_time: float, profile: Qos = FRAME_QOS) -> None:
        self.connect(topic, msg.__msgtype__, profile)
        self.write_raw(topic, bytes(self.ts.serialize_cdr(msg, msg.__msgtype__)), log_time)

    def write_raw(self, topic: str, data: bytes, log_time: float) -> None:
        self._writer.write(self._conns[topic], int(round(log_time * 1e9)), data)


# ---- reading --------------------------------------------------------------------------------------

@dataclass
class Record:
    log_time: float     # receive time (s)
    msg: Any


STORAGE_FILES = (".mcap", ".db3")


def is_bag(path: str | Path) -> bool:
    """A rosbag2 directory, or a bare .mcap/.db3 file (as the mcap libraries and other tools write them)."""
    path = Path(path)
    return path.is_dir() or (path.is_file() and path.suffix in STORAGE_FILES)


def bag_source(path: str | Path) -> Path:
    """What to read for ``path``: a rosbag2 directory with metadata.yaml, a bare .mcap or .db3 file, or the one
    storage file of a folder without metadata.yaml."""
    path = Path(path)
    if path.is_file():
        if path.suffix not in STORAGE_FILES:
            raise ValueError(f"{path}: not a bag (a rosbag2 directory, or a {' or '.join(STORAGE_FILES)} file)")
        return path
    if not path.is_dir():
        raise ValueError(f"{path}: no such bag (a rosbag2 directory, or a {' or '.join(STORAGE_FILES)} file)")
    if (path / "metadata.yaml").is_file():
        return path
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in STORAGE_FILES)
    if len(files) != 1:
        names = ", ".join(p.name for p in files) or "none"
        raise ValueError(f"{path}: not a bag: no metadata.yaml, and {len(files)} .mcap/.db3 files in it ({names}); "
                         "pass the bag file itself")
    return files[0]


def open_reader(path: str | Path) -> Reader:
    return Reader(bag_source(path))


def reader_typestore(reader: Reader) -> Any:
    """Kilted store + the definitions stored in the bag for types it lacks (e.g. audio_common_msgs)."""
    ts = get_typestore(Stores.ROS2_KILTED)
    extra: dict = {}
    for conn in reader.connections:
        if conn.msgtype not in ts.fielddefs and conn.msgtype not in extra:
            if conn.msgdef.data:
                extra.update(get_types_from_msg(conn.msgdef.data, conn.msgtype))
            else:
                for name, text in _EXTRA_TYPES.get(adapter_type(conn.msgtype), {}).items():
                    extra.update(get_types_from_msg(text, name))
    if extra:
        ts.register({k: v for k, v in extra.items() if k not in ts.fielddefs})
    return ts


def read_topics(path: str | Path, topics: list[str] | None = None) -> tuple[dict[str, list[Record]], dict[str, str]]:
    """Deserialized messages per topic (in receive-time order) and the topic types."""
    with open_reader(path) as reader:
        ts = reader_typestore(reader)
        conns = [c for c in reader.connections if topics is None or c.topic in topics]
        types = {c.topic: c.msgtype for c in conns}
        out: dict[str, list[Record]] = {t: [] for t in types}
        if conns:
            for conn, t_ns, raw in reader.messages(connections=conns):
                out[conn.topic].append(Record(t_ns * 1e-9, ts.deserialize_cdr(raw, conn.msgtype)))
    return out, types


def stamp_sec(msg: Any) -> float | None:
    """Header stamp (or foxglove timestamp) of a message in seconds, None when it has none."""
    t = msg.header.stamp if hasattr(msg, "header") else getattr(msg, "timestamp", None)
    return None if t is None else t.sec + t.nanosec * 1e-9


def find_audio_topic(types: dict[str, str], topic: str | None = None) -> str:
    """The audio topic of a bag: ``topic`` if given, else the one topic of a known audio type."""
    if topic:
        if topic not in types:
            raise ValueError(f"audio topic {topic!r} is not in the bag; topics: {', '.join(sorted(types))}")
        return topic
    found = [t for t, m in types.items() if adapter_type(m) in ADAPTERS and not t.startswith("/truth")]
    if len(found) != 1:
        raise ValueError(f"cannot tell the audio topic ({len(found)} candidates: {', '.join(found) or 'none'}); "
                         f"pass --audio-topic; topics: {', '.join(sorted(types))}")
    return found[0]


@dataclass
class AudioStream:
    samples: np.ndarray        # (n,) float32 mono, gaps between chunks not filled
    sample_rate: int
    chunk_starts: np.ndarray   # (C,) capture time of each chunk's first sample (s, bag clock)
    chunk_sizes: np.ndarray    # (C,) frames per chunk
    log_times: np.ndarray      # (C,) receive times


def decode_audio(records: list[Record], msgtype: str, sample_rate: int = 16000, channels: int = 1,
                 info: list[Record] | None = None) -> AudioStream:
    """Audio messages of any supported type -> one mono float stream with per-chunk capture times.
    Messages without a stamp are dated by receive time minus their duration."""
    from lsf_core.audio import downmix, resample, to_float

    name = adapter_type(msgtype)
    _check_audio_type(name)
    adapter = ADAPTERS[name](sample_rate, channels)
    if info:
        adapter.on_info(info[-1].msg)
    if not records:
        raise AudioError(f"no {name} messages on the audio topic")
    parts, starts, sizes, logs, rate = [], [], [], [], None
    for rec in records:
        chunk = adapter.decode(rec.msg)
        if rate is None:
            rate = chunk.sample_rate
        mono = downmix(to_float(np.asarray(chunk.samples)))
        if chunk.sample_rate != rate:
            mono = resample(mono, chunk.sample_rate, rate)
        n = mono.shape[0]
        starts.append(chunk.stamp if chunk.stamp is not None else rec.log_time - n / rate)
        parts.append(mono.astype(np.float32))
        sizes.append(n)
        logs.append(rec.log_time)
    return AudioStream(np.concatenate(parts), int(rate), np.array(starts), np.array(sizes), np.array(logs))


@dataclass
class Track:
    stamps: np.ndarray         # (T,) header stamps (s)
    recv: np.ndarray           # (T,) receive times (s)
    values: np.ndarray         # (T, K) joint positions or (T, V, 3) points
    names: list[str]


def joint_track(records: list[Record]) -> Track:
    if not records:
        return Track(np.zeros(0), np.zeros(0), np.zeros((0, 0)), [])
    names = list(records[0].msg.name)
    return Track(np.array([stamp_sec(r.msg) for r in records]), np.array([r.log_time for r in records]),
                 np.stack([np.asarray(r.msg.position, np.float64) for r in records]), names)


def cloud_points(msg: Any) -> np.ndarray:
    if msg.point_step != 12 or [f.name for f in msg.fields] != ["x", "y", "z"]:
        raise ValueError("vertex clouds must hold packed x, y, z float32 points")
    return np.frombuffer(bytes(msg.data), "<f4").reshape(-1, 3)


def cloud_track(records: list[Record]) -> Track:
    if not records:
        return Track(np.zeros(0), np.zeros(0), np.zeros((0, 0, 3)), [])
    return Track(np.array([stamp_sec(r.msg) for r in records]), np.array([r.log_time for r in records]),
                 np.stack([cloud_points(r.msg) for r in records]), [])


def json_records(records: list[Record]) -> list[Any]:
    return [json.loads(r.msg.data) for r in records]
