"""``animator`` node: speech on ``audio`` in, a timed face out (``face/*``), diagnostics on ``/diagnostics``.

Thin by design: parameters -> ``StreamConfig``; messages -> numpy via ``audio_adapters``; an
``AnimationWorker`` (lsf_core.runtime) queues the audio and runs the ``StreamingAnimator`` on one
thread, so the executor never blocks on inference and a slow CPU drops the oldest audio (counted)
instead of stalling; ``face_messages`` builds the outputs.
"""
from __future__ import annotations

import math
import pickle
import sys
import time
from collections import deque
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import SetParametersResult
from rclpy.clock import ClockChange, JumpThreshold
from rclpy.duration import Duration
from rclpy.exceptions import ParameterException
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import JointState, PointCloud2
from std_msgs.msg import Float32MultiArray
from visualization_msgs.msg import Marker

from lsf_core.audio import AudioError
from lsf_core.config import ConfigError
from lsf_core.runtime import health
from lsf_core.runtime.clock import ChunkClock
from lsf_core.runtime.liveliness import GROUPS, liveliness_config
from lsf_core.runtime.pacing import FramePacer
from lsf_core.runtime.sources import SourceTracker
from lsf_core.runtime.worker import AnimationWorker
from lsf_ros import face_messages as fm
from lsf_ros.audio_adapters import (
    ADAPTERS,
    DEFAULT_AUDIO_TYPE,
    AudioAdapter,
    CompressedAudioError,
    HeldAudio,
    available_types,
    follow,
    make_adapter,
    subscribe_audio_info,
    waiting_for_info,
)
from lsf_ros.head_gaze import HeadGaze
from lsf_ros.node_main import spin_and_close
from lsf_ros.params import Param, declare, descriptor, invalid_reason

AUDIO_QOS = QoSProfile(depth=50, reliability=ReliabilityPolicy.BEST_EFFORT, history=HistoryPolicy.KEEP_LAST)
OFFSETS_QOS = QoSProfile(depth=30, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
LATCHED_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)


# name -> declaration. read_only parameters need a restart (they shape the model or the topics).
PARAMS: dict[str, Param] = {
    "model": Param("realtime", "model preset name (shipped weights) or path to a .safetensors model"),
    "neutral_mesh": Param("", "face to animate: a rig (.npz, OBJ + shapes, glTF with ARKit or viseme targets) or "
                          "a plain mesh, rigged automatically (docs/faces.md); empty = default avatar"),
    "flame_model": Param("", "FLAME model file, for models that output FLAME parameters"),
    "rate": Param(30.0, "output frames per second (changeable at run time)", (25.0, 120.0), read_only=False),
    "smoothing": Param(0.0, "exponential smoothing of the outputs, 0 = none (changeable at run time)",
                       (0.0, 0.95), read_only=False),
    "mesh_rate": Param(10.0, "rate of the face/mesh Marker in Hz, 0 = off (changeable at run time)",
                       (0.0, 60.0), read_only=False),
    "window": Param(2.0, "s of left context for clip-based models", (0.2, 30.0)),
    "hop": Param(0.04, "s between model evaluations", (0.04, 1.0)),
    "lookahead": Param(0.08, "s of future audio clip-based models see", (0.0, 2.0)),
    "device": Param("auto", "inference device", choices=("auto", "cpu", "cuda")),
    "precision": Param("fp32", "inference precision (fp16 only on cuda)", choices=("fp32", "fp16", "bf16")),
    "audio_type": Param(DEFAULT_AUDIO_TYPE, "message type on the audio topic", choices=tuple(ADAPTERS)),
    "audio_reliability": Param("best_effort", "QoS of the audio subscription: best_effort matches every publisher; "
                               "reliable matches only reliable ones, but large messages (seconds of audio) "
                               "survive DDS fragmentation", choices=("best_effort", "reliable")),
    "sample_rate": Param(16000, "sample rate of audio messages that do not carry one", (8000, 192000),
                         read_only=False),
    "wait_for_audio_info": Param(True, "audio types whose rate and channels come only on audio_info (ros-drivers "
                                 "AudioData, AudioDataStamped): true = hold their messages until an AudioInfo "
                                 "arrives; false = read them with sample_rate and channels until one does"),
    "channels": Param(1, "channel count of audio messages that do not carry one", (1, 32), read_only=False),
    "frame_id": Param("face", "frame_id of every output"),
    "retarget_map": Param("", "YAML retarget map blendshapes -> robot joints (face/joint_commands); empty = off"),
    "flame_type": Param("joint_state", "message type of face/flame", choices=("joint_state", "multiarray")),
    "max_queue": Param(2.0, "s of audio waiting to be animated at most; older audio is dropped and counted (the "
                       "newest message is always animated whole)", (0.1, 30.0)),
    "frame_history": Param(5.0, "s of frames each reliable frame topic keeps for a subscriber that falls behind (its "
                           "process stalled, or a burst after queued audio): one stalled longer loses the oldest; "
                           "depth = this x rate at start (face/vertex_offsets keeps 30, its frames are large)",
                           (1.0, 60.0)),
    "max_message": Param(10.0, "s of audio one message may hold; longer ones are rejected (a stuck or corrupt "
                         "source)", (0.1, 600.0)),
    "relax_time": Param(0.2, "s for the face to relax to neutral in silence", (0.01, 5.0)),
    "flush_after": Param(0.4, "s without audio after which the frames held back by the look-ahead are sent",
                         (0.05, 10.0)),
    "clock_resync": Param(0.5, "audio without stamps: a chunk this much later or earlier than the sample count "
                          "predicts starts a new time line (the source paused; audio faster than real time; time "
                          "went back); a ROS clock jump this large is logged", (0.05, 10.0)),
    "diagnostics_period": Param(1.0, "s between /diagnostics messages", (0.1, 60.0)),
    "publish_delay": Param(0.0, "0: frames go out as soon as they are ready; > 0: each frame at its stamp + this "
                           "many s; -1: at stamp + the p95 of how late frames are ready (auto; every frame then "
                           "has the same latency, for speakers and faces that show frames on receipt)",
                           (-1.0, 10.0)),
    "liveliness": Param(True, "liveliness layer after the model: blinks, gaze, head motion, brows, idle motion; "
                        "false = exactly the model's output (changeable at run time)", read_only=False),
    **{f"liveliness_{g}": Param(True, f"liveliness group {g} on/off (changeable at run time)", read_only=False)
       for g in GROUPS},
    "liveliness_seed": Param(0, "seed of the layer's random draws: same audio, stamps and seed = same face",
                             (0, 2 ** 31 - 1)),
    "head_scale": Param(1.0, "amplitude of speech head motion: 1 = read speech as measured, 2-3 = lively conversation "
                        "(changeable at run time)", (0.0, 10.0), read_only=False),
    "liveliness_config": Param("", "YAML of the layer's detailed settings (rates, timings, limits; "
                               "docs/liveliness.md); empty = defaults"),
    "head_parent_frame": Param("head_base", "TF parent of the head pose: REP-103 axes, the face frame at rest"),
    "head_frame": Param("", "TF child frame the head pose moves; empty = frame_id"),
    "gaze_target_frame": Param("", "TF frame to look at (e.g. a tracked person's head); empty = off; needs tf2_ros"),
    "gaze_timeout": Param(1.0, "s after which a gaze target that is not refreshed is dropped (natural gaze again)",
                          (0.1, 60.0)),
}


def check_value(name: str, value: Any) -> str | None:
    """Reason a value is invalid (choices, and ranges for callers outside rclpy), or None."""
    return invalid_reason(name, PARAMS[name], value)


__all__ = ["PARAMS", "AnimatorNode", "check_value", "descriptor", "main"]


class AnimatorNode(Node):
    def __init__(self, node_name: str = "animator", **kwargs: Any):
        super().__init__(node_name, **kwargs)
        self.p = declare(self, PARAMS)
        self.adapter: AudioAdapter = make_adapter(self.p["audio_type"], self.p["sample_rate"], self.p["channels"])
        from lsf_core.runtime.streaming import StreamConfig, StreamingAnimator

        try:
            live = liveliness_config(self.p["liveliness_config"], self.p["liveliness"], self.p["liveliness_seed"],
                                     self.p["head_scale"], **{g: self.p[f"liveliness_{g}"] for g in GROUPS})
        except (ValueError, OSError) as err:
            raise FileParameterError("liveliness_config", self.p["liveliness_config"], err) from err
        # max_queue bounds the audio waiting in the worker's queue; one message the node accepts (up to
        # max_message s) is animated whole, never turned into silence
        cfg = StreamConfig(**{k: self.p[k] for k in (
            "model", "neutral_mesh", "flame_model", "rate", "window", "hop", "lookahead", "smoothing",
            "device", "precision", "relax_time")}, max_queue=self.p["max_message"], liveliness=live)
        self.animator = _load(StreamingAnimator, cfg)
        if self.p["device"] not in ("auto", self.animator.device):
            self.get_logger().warning(f"device {self.p['device']!r} is not usable here: running on "
                                      f"{self.animator.device}")
        self.retargeter = None
        if self.p["retarget_map"]:
            from lsf_core.face.retarget import Retargeter, load_retarget_map

            try:
                self.retargeter = Retargeter(load_retarget_map(self.p["retarget_map"]),
                                             self.animator.blendshape_names, self.p["retarget_map"])
            except (ValueError, OSError) as err:
                raise FileParameterError("retarget_map", self.p["retarget_map"], err) from err
        self.add_on_set_parameters_callback(self._on_set_parameters)

        frame_id = self.p["frame_id"]
        self.mesh = fm.MeshMarker(self.animator.rig.faces, frame_id, ns="face")
        frame_qos = QoSProfile(depth=math.ceil(self.p["frame_history"] * self.p["rate"]),
                               reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
        self.pub_blend = self.create_publisher(JointState, "face/blendshapes", frame_qos)
        self.pub_offsets = self.create_publisher(PointCloud2, "face/vertex_offsets", OFFSETS_QOS)
        flame_cls = JointState if self.p["flame_type"] == "joint_state" else Float32MultiArray
        self.pub_flame = self.create_publisher(flame_cls, "face/flame", frame_qos)
        self.pub_mesh = self.create_publisher(Marker, "face/mesh", QoSProfile(depth=2))
        self.pub_neutral = self.create_publisher(Marker, "face/neutral", LATCHED_QOS)
        self.pub_joints = (self.create_publisher(JointState, "face/joint_commands", frame_qos)
                           if self.retargeter else None)
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.head_gaze = HeadGaze(self, self.animator, None, frame_qos, self.p["head_parent_frame"],
                                  self.p["head_frame"] or frame_id, self.p["gaze_target_frame"], self.p["gaze_timeout"])
        neutral = fm.MeshMarker(self.animator.rig.faces, frame_id, ns="neutral",
                                color=(0.7, 0.7, 0.75, 0.5)).msg(self.animator.rig.vertices, self._now())
        self.pub_neutral.publish(neutral)

        self._chunk_clock = ChunkClock(self.p["clock_resync"], on_jump=self._on_stamp_jump)
        self.sources = SourceTracker()
        self.health = health.Health()
        self._sim_time = bool(self.get_parameter("use_sim_time").value)
        resync = int(self.p["clock_resync"] * 1e9)
        self._time_jump = self.get_clock().create_jump_callback(
            JumpThreshold(min_forward=Duration(nanoseconds=resync), min_backward=Duration(nanoseconds=-resync)),
            post_callback=self._on_time_jump)
        self._last_mesh_stamp = -1e9
        self._latency_ms: deque[float] = deque(maxlen=1000)
        self.counts = {"bad_messages": 0, "compressed_messages": 0, "frames": 0, "time_jumps": 0}
        self._held = HeldAudio()
        self._diag_prev = (time.monotonic(), 0, 0)
        self.pacer = None
        if self.p["publish_delay"] != 0.0 and self._sim_time:
            self.get_logger().warning("publish_delay is ignored with use_sim_time: frames go out when ready")
        elif self.p["publish_delay"] != 0.0:
            self.pacer = FramePacer(self._emit, self._now, self.p["publish_delay"])
        self.worker = AnimationWorker(self.animator, self.pacer.submit if self.pacer else self._emit,
                                      self.p["max_queue"], self.p["flush_after"], self._bad, self._on_error)
        self.head_gaze.lock = self.worker.lock

        # raw: a message that does not deserialize (wrong type or corrupt bytes on the topic) reaches us and
        # is counted, instead of being dropped silently inside the executor
        self._msg_class = self.adapter.msg_class()
        qos = AUDIO_QOS if self.p["audio_reliability"] == "best_effort" else QoSProfile(
            depth=AUDIO_QOS.depth, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
        self.create_subscription(self._msg_class, "audio", self._on_audio, qos, raw=True)
        subscribe_audio_info(self, self.adapter, self._on_info)
        self.create_timer(self.p["diagnostics_period"], self._publish_diagnostics)
        self.get_logger().info(
            f"animating {self.p['audio_type']} on {self.resolve_topic_name('audio')} with model "
            f"{self.p['model']!r} on {self.animator.device}; outputs on "
            f"{self.resolve_topic_name('face/blendshapes').rsplit('/', 1)[0]}/*")

    # ---- parameters -------------------------------------------------------------------------------
    def _on_set_parameters(self, params: list) -> SetParametersResult:
        for prm in params:
            if prm.name not in PARAMS:
                continue
            reason = check_value(prm.name, prm.value)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
        with self.worker.lock:
            for prm in params:
                if prm.name == "rate":
                    self.animator.set_rate(float(prm.value))
                elif prm.name == "smoothing":
                    self.animator.set_smoothing(float(prm.value))
                elif prm.name == "sample_rate":
                    self.adapter.sample_rate = int(prm.value)
                elif prm.name == "channels":
                    self.adapter.channels = int(prm.value)
                elif prm.name == "liveliness":
                    self.animator.set_liveliness(enabled=bool(prm.value))
                elif prm.name.startswith("liveliness_") and prm.name[len("liveliness_"):] in GROUPS:
                    self.animator.set_liveliness(**{prm.name[len("liveliness_"):]: bool(prm.value)})
                elif prm.name == "head_scale":
                    self.animator.config.liveliness.head_motion.scale = float(prm.value)
                if prm.name in PARAMS:
                    self.p[prm.name] = prm.value
        return SetParametersResult(successful=True)

    # ---- input ------------------------------------------------------------------------------------
    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _bad(self, what: str, err: Exception) -> None:
        self.counts["bad_messages"] += 1
        self.get_logger().warning(f"{what}: {err} (ignored; {self.counts['bad_messages']} so far)",
                                  throttle_duration_sec=5.0)

    def _on_info(self, msg: Any) -> None:
        try:
            self.adapter.on_info(msg)
        except (AudioError, ValueError, TypeError) as err:
            self._bad("audio_info", err)
        if self.adapter.info_received:   # audio held while no AudioInfo had come: now it can be read (or rejected)
            for item in self._held.release():
                self._take(*item)

    def _on_audio(self, raw: bytes, info: dict) -> None:
        received = time.monotonic()
        if waiting_for_info(self.adapter, self.p["wait_for_audio_info"]):
            self._held.hold((raw, info, received))
            self.get_logger().warning(
                f"no AudioInfo on {self.resolve_topic_name('audio_info')} yet: holding {len(self._held.items)} "
                f"{self.p['audio_type']} messages ({self._held.dropped} dropped), whose rate and channels only an "
                "AudioInfo gives; publish one (transient local or volatile), remap audio_info_topic, or set "
                "wait_for_audio_info:=false to read them with sample_rate and channels",
                throttle_duration_sec=5.0)
            return
        self._take(raw, info, received)

    def _take(self, raw: bytes, info: dict, received: float) -> None:
        try:
            msg = deserialize_message(raw, self._msg_class)
        except Exception as err:  # noqa: BLE001 - whatever the bytes are, they are one bad message
            self._bad(f"audio message of {len(raw)} bytes does not deserialize as {self.p['audio_type']}", err)
            return
        try:
            chunk = self.adapter.decode(msg)
            samples = np.asarray(chunk.samples)
            if samples.dtype.kind == "f" and not np.all(np.isfinite(samples)):
                raise AudioError("samples contain NaN or Inf")
            if not 0 < chunk.sample_rate <= 384000:
                raise AudioError(f"sample rate {chunk.sample_rate} is out of range 1..384000")
            if samples.shape[0] > self.p["max_message"] * chunk.sample_rate:
                raise AudioError(f"message holds {samples.shape[0] / chunk.sample_rate:.1f} s of audio, more than "
                                 f"max_message={self.p['max_message']} s")
        except CompressedAudioError as err:
            self.counts["compressed_messages"] += 1
            self.get_logger().warning(f"{err} ({self.counts['compressed_messages']} so far)", throttle_duration_sec=5.0)
            return
        except (AudioError, ValueError, TypeError, OverflowError) as err:
            self._bad("audio message", err)
            return
        if not follow(self.sources, info, samples.shape[0] / chunk.sample_rate, received):
            self.get_logger().warning(
                f"{self.sources.publishers(received)} publishers on {self.resolve_topic_name('audio')}: following "
                f"one, the others are ignored ({self.sources.counts['ignored_messages']} messages so far; "
                "docs/reliability.md)", throttle_duration_sec=5.0)
            return
        if self.sources.new_source:
            self._chunk_clock.reset()
            if self.sources.counts["switches"]:
                self.get_logger().info("following another publisher on the audio topic (the one followed went "
                                       "quiet)")
        restart = self.sources.new_source   # another publisher: its own time line
        if chunk.stamp is not None:
            stamp = chunk.stamp
        else:  # no stamp in the message: when it was published (DDS source time) marks the end of its audio
            sent = info.get("source_timestamp", 0) * 1e-9 if not self._sim_time else 0.0
            stamp = self._chunk_clock.stamp(samples.shape[0], chunk.sample_rate, sent if sent > 0 else self._now())
            restart = restart or self._chunk_clock.moved_back
        self.worker.submit(samples, chunk.sample_rate, stamp, received, restart)

    def _on_stamp_jump(self, kind: str, seconds: float) -> None:
        why = {"late": "a message came later than its sample count predicts (the source paused or messages were lost)",
               "early": "the sample count ran ahead of arrival (audio faster than real time, or time went back)",
               "drift": "the sample count drifted from the arrival times"}[kind]
        self.get_logger().warning(f"unstamped audio: {why}; its time line moves {seconds:+.3f} s "
                                  f"({sum(self._chunk_clock.jumps.values())} moves so far)", throttle_duration_sec=5.0)

    def _on_time_jump(self, jump: Any) -> None:
        """The ROS clock jumped (sim time: a bag looped, /clock restarted): log it; stamps follow (unstamped audio
        re-anchors at its next message, stamped audio restarts the stream at its new stamps)."""
        delta = jump.delta.nanoseconds * 1e-9
        if jump.clock_change != ClockChange.ROS_TIME_NO_CHANGE or self._now() - delta <= 0.0:
            return   # ROS time switched on or off, or its first /clock message: not a jump of a running clock
        self.counts["time_jumps"] += 1
        self.get_logger().warning(f"the ROS clock jumped {'back' if delta < 0 else 'forward'} by {abs(delta):.3f} s: "
                                  "face stamps follow it")

    def _on_error(self, err: Exception) -> None:
        self.get_logger().error(f"animation step failed ({type(err).__name__}: {err}); the stream restarts "
                                f"({self.worker.counts['errors']} errors so far)", throttle_duration_sec=5.0)

    # ---- output -----------------------------------------------------------------------------------
    def _emit(self, frames: list) -> None:
        """Publish from the worker; a shutdown racing with it ends the worker quietly."""
        try:
            self._publish(frames)
        except Exception:
            if self.context.ok():
                raise
            self.worker.request_stop()

    def _publish(self, frames: list) -> None:
        frame_id = self.p["frame_id"]
        names = self.animator.blendshape_names
        rig = self.animator.rig
        latencies, mesh_frame = [], None
        offsets_wanted = self.pub_offsets.get_subscription_count() > 0   # else each frame's offsets are never made
        for f in frames:
            self.pub_blend.publish(fm.blendshapes_msg(names, f.blendshapes, f.stamp, frame_id))
            if offsets_wanted:
                self.pub_offsets.publish(fm.offsets_cloud(f.vertex_offsets, f.stamp, frame_id))
            if f.flame is not None:
                self.pub_flame.publish(fm.flame_joint_state(f.flame, f.stamp, frame_id)
                                       if self.p["flame_type"] == "joint_state" else fm.flame_array(f.flame))
            self.head_gaze.publish(f)
            if self.pub_joints is not None:
                joints = self.retargeter.step(f.blendshapes, f.stamp, f.pose)
                self.pub_joints.publish(fm.joints_msg(self.retargeter.joint_names, joints, f.stamp, frame_id))
            mesh_rate = self.p["mesh_rate"]
            if mesh_rate > 0 and f.stamp - self._last_mesh_stamp >= 1.0 / mesh_rate - 1e-6:
                self._last_mesh_stamp, mesh_frame = f.stamp, f
            latencies.append(1000.0 * (self._now() - f.stamp))
        if mesh_frame is not None:  # the big marker goes after the frames, so it never delays one
            self.pub_mesh.publish(self.mesh.serialized(rig.vertices + mesh_frame.vertex_offsets, mesh_frame.stamp))
        with self.worker.lock:
            self._latency_ms.extend(latencies)
            self.counts["frames"] += len(frames)

    def _publish_diagnostics(self) -> None:
        now, counts = time.monotonic(), self.worker.counts
        t0, chunks0, samples0 = self._diag_prev
        dt = max(now - t0, 1e-6)
        self._diag_prev = (now, counts["chunks"], counts["samples"])
        with self.worker.lock:
            st = self.animator.stats()
            lat = np.array(self._latency_ms) if self._latency_ms else np.zeros(1)
            proc = np.array(self.worker.processing_ms) if self.worker.processing_ms else np.zeros(1)
        values = {
            "input_chunks_per_s": (counts["chunks"] - chunks0) / dt,
            "input_samples_per_s": (counts["samples"] - samples0) / dt,
            "latency_ms_p50": float(np.percentile(lat, 50)),
            "latency_ms_p95": float(np.percentile(lat, 95)),
            "processing_ms_p50": float(np.percentile(proc, 50)),
            "processing_ms_p95": float(np.percentile(proc, 95)),
            "rtf": st["rtf"],
            "algorithmic_latency_ms": st["algorithmic_latency_ms"],
            **self.losses(st),
            "publishers": self.count_publishers(self.resolve_topic_name("audio")),
            "publishers_sending": self.sources.publishers(now),
            "late_chunks": st["late_chunks"],
            "bad_messages": self.counts["bad_messages"],
            "compressed_messages": self.counts["compressed_messages"],
            "held_messages": len(self._held.items),
            "held_dropped": self._held.dropped,
            "clipped_chunks": st["clipped_chunks"],
            "clock_resets": st["clock_resets"],
            "time_jumps": self.counts["time_jumps"],
            "model_resets": st["model_resets"],
            "device_fallbacks": st["device_fallbacks"],
            "errors": counts["errors"],
            "chunks": counts["chunks"],
            "frames": self.counts["frames"],
            "queued_s": self.worker.queued_s,
            "rate": self.p["rate"],
            "device": self.animator.device,
        }
        if self.pacer is not None:
            values.update(publish_delay_ms=1000.0 * self.pacer.delay, late_frames=self.pacer.counts["late"])
        level, message = self.health.assess(values, now)
        status = DiagnosticStatus(level=DiagnosticStatus.WARN if level == health.WARN else DiagnosticStatus.OK,
                                  name=f"{self.get_fully_qualified_name()}: animator",
                                  message=message, hardware_id=self.animator.device,
                                  values=[KeyValue(key=k, value=f"{v:.3f}" if isinstance(v, float) else str(v))
                                          for k, v in values.items()])
        arr = DiagnosticArray(status=[status])
        arr.header.stamp = self.get_clock().now().to_msg()
        self.pub_diag.publish(arr)

    def losses(self, st: dict) -> dict:
        """Audio lost so far, counted and in seconds, and the moves of the stamp clock's time line, given the engine's
        ``stats()`` (docs/reliability.md)."""
        counts, src = self.worker.counts, self.sources.counts
        return {"dropped_chunks": counts["dropped_chunks"] + st["dropped_chunks"],
                "dropped_s": counts["dropped_s"] + st["dropped_seconds"],
                "lost_messages": src["lost_messages"], "lost_s": src["lost_s"], "silenced_s": st["silenced_seconds"],
                "gaps": st["gaps"], "gap_s": st["gap_seconds"], "restarts": st["restarts"],
                "clock_jumps": sum(self._chunk_clock.jumps.values()),
                "ignored_messages": src["ignored_messages"], "ignored_s": src["ignored_s"]}

    def idle(self) -> bool:
        """True when every received chunk has been animated and the look-ahead tail flushed."""
        return self.worker.idle() and (self.pacer is None or self.pacer.pending() == 0)

    def close(self) -> None:
        self._time_jump.unregister()   # before the node and its clock go
        self.worker.close()
        if self.pacer is not None:
            self.pacer.close()


class FileParameterError(ValueError):
    """A file named by a parameter cannot be used."""

    def __init__(self, name: str, path: str, err: Exception):
        super().__init__(f"parameter {name}={path!r}: {err}")


# which parameter names the file a loader error is about (see lsf_core.models.registry, rig, flame)
_FILE_ERRORS = {"ModelFileError": "model", "RigError": "neutral_mesh", "FlameError": "flame_model",
                "UnsafePickleError": "flame_model"}


def _load(factory, cfg):
    """Build the animator; a model, rig or FLAME file that cannot be used is an error naming its parameter."""
    try:
        return factory(cfg)
    except (ValueError, OSError, pickle.UnpicklingError) as err:
        name = next((p for cls in type(err).__mro__ if (p := _FILE_ERRORS.get(cls.__name__))), None)
        if name is None:
            raise
        raise FileParameterError(name, getattr(cfg, name), err) from err


def main(args: list[str] | None = None) -> int:
    rclpy.init(args=args)
    node = None
    try:
        node = AnimatorNode()
    except (ValueError, ParameterException, OSError, pickle.UnpicklingError) as err:
        kind = "configuration" if isinstance(err, ConfigError) else "startup"
        hint = f"\n  available audio types here: {', '.join(available_types())}" if "audio_type" in str(err) else ""
        print(f"animator: {kind} error: {err}{hint}", file=sys.stderr)
        rclpy.try_shutdown()
        return 1
    except KeyboardInterrupt:   # stopped while loading the model (Ctrl-C, or launch ending a failed graph)
        rclpy.try_shutdown()
        return 130
    return spin_and_close(node)


if __name__ == "__main__":
    sys.exit(main())
