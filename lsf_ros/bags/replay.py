"""``lsf-bag replay``: publish a bag's audio into the running graph (paced like a live source) and record the
face topics into a new bag. The only part of ``lsf_ros.bags`` that starts rclpy."""
from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

from lsf_ros.audio_adapters import ADAPTERS
from lsf_ros.bags import io as B
from lsf_ros.spinning import BackgroundSpin

FACE_TOPICS = ("blendshapes", "vertex_offsets", "flame", "neutral")
DEFAULT_CLASSES = {"blendshapes": "sensor_msgs/msg/JointState", "vertex_offsets": "sensor_msgs/msg/PointCloud2",
                   "flame": "sensor_msgs/msg/JointState", "neutral": "visualization_msgs/msg/Marker",
                   "mesh": "visualization_msgs/msg/Marker", "joint_commands": "sensor_msgs/msg/JointState",
                   "diagnostics": "diagnostic_msgs/msg/DiagnosticArray"}


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
    spin = None
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
            spin = BackgroundSpin(executor, "lsf-bag-replay")
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
            spin.stop()                             # no more callbacks into the writer
            summary = {"source": str(Path(bag).resolve()), "audio_topic": publish_topic,
                       "audio_type": B.adapter_type(msgtype), "rate_factor": rate_factor, "offset": offset,
                       "restamped": bool(stamped and restamp), "published": len(messages),
                       "clips": clips, "received": dict(counts), "domain_id": domain}
            w.write(B.REPLAY_TOPIC, B.string_msg(w.ts, summary), wall0, B.LATCHED_QOS)
        return summary
    finally:
        if spin is not None:
            spin.stop()
        rclpy.try_shutdown(context=context)


def _is_stamped(msgtype: str) -> bool:

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
