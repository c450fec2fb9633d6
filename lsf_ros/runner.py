"""``lsf-ros``: the animate graph without the launch package (pip-only machines), and the latency bench.

``lsf-ros animate audio_source:=file audio_file:=speech.wav rate:=30 --record out.npz`` takes the
launch file's arguments (``name:=value``), reads the same ``config/animate.yaml`` and starts the same
nodes, in one process on a MultiThreadedExecutor. ``--record`` writes the frames received on
``face/*`` as NPZ (the ``lsf infer`` layout), ``--preview`` renders them to MP4 when lsf_core.face.render is
available. ``lsf-ros bench-latency`` measures chunk-published -> frame-received latency.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from lsf_ros.graph import GraphPlan, NodeSpec, node_parameters, plan_graph, rviz_remappings
from lsf_ros.spinning import BackgroundSpin

OUTPUT_TOPICS = {
    "face/blendshapes": "sensor_msgs/JointState (ARKit weights 0..1)",
    "face/vertex_offsets": "sensor_msgs/PointCloud2 (x, y, z float32 metres)",
    "face/flame": "FLAME exp50 + jaw3 (models with FLAME output)",
    "face/mesh": "visualization_msgs/Marker TRIANGLE_LIST (RViz)",
    "face/neutral": "visualization_msgs/Marker, transient local",
    "/diagnostics": "diagnostic_msgs/DiagnosticArray",
}


def make_recorder(context: Any, namespace: str = "") -> Any:
    """A node that keeps every frame received on face/blendshapes, face/vertex_offsets and face/flame."""
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import JointState, PointCloud2

    from lsf_ros.face_messages import cloud_offsets

    deep = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)  # a recorder must not drop frames

    class FrameRecorder(Node):
        def __init__(self) -> None:
            super().__init__("lsf_recorder", context=context, namespace=namespace)
            self.lock = threading.Lock()
            self.blend: dict[int, np.ndarray] = {}
            self.offsets: dict[int, np.ndarray] = {}
            self.flame: dict[int, np.ndarray] = {}
            self.names: list[str] = []
            self.create_subscription(JointState, "face/blendshapes", self._on_blend, deep)
            self.create_subscription(PointCloud2, "face/vertex_offsets", self._on_offsets, deep)
            self.create_subscription(JointState, "face/flame", self._on_flame, deep)

        @staticmethod
        def _key(msg: Any) -> int:
            return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec

        def _on_blend(self, msg: Any) -> None:
            with self.lock:
                self.names = list(msg.name)
                self.blend[self._key(msg)] = np.asarray(msg.position, np.float32)

        def _on_offsets(self, msg: Any) -> None:
            with self.lock:
                self.offsets[self._key(msg)] = cloud_offsets(msg).copy()

        def _on_flame(self, msg: Any) -> None:
            with self.lock:
                self.flame[self._key(msg)] = np.asarray(msg.position, np.float32)

        def count(self) -> int:
            with self.lock:
                return len(self.blend.keys() & self.offsets.keys())

        def arrays(self, fps: float, faces: np.ndarray, neutral: np.ndarray) -> dict[str, np.ndarray]:
            with self.lock:
                keys = sorted(self.blend.keys() & self.offsets.keys())
                out = {
                    "fps": np.float32(fps),
                    "times": np.array(keys, np.float64) * 1e-9,
                    "blendshape_names": np.array(self.names),
                    "blendshapes": np.stack([self.blend[k] for k in keys]) if keys else np.zeros((0, len(self.names))),
                    "vertex_offsets": (np.stack([self.offsets[k] for k in keys]) if keys
                                       else np.zeros((0, len(neutral), 3), np.float32)),
                    "faces": np.asarray(faces, np.int32),
                    "neutral": np.asarray(neutral, np.float32),
                }
                if keys and all(k in self.flame for k in keys):
                    out["flame"] = np.stack([self.flame[k] for k in keys])
            return out

    return FrameRecorder()


NODE_CLASSES = {"animator": ("lsf_ros.animator_node", "AnimatorNode"),
                "file_source": ("lsf_ros.file_source", "FileSource"), "mic_source": ("lsf_ros.mic_source", "MicSource"),
                "tts_source": ("lsf_ros.tts_source", "TtsSource"), "speaker": ("lsf_ros.speaker_node", "SpeakerNode")}


def _ros_args(remappings: list[tuple[str, str]]) -> list[str]:
    """``--ros-args -r SRC:=DST ...`` for ``remappings`` (none: no arguments)."""
    remaps = [arg for src, dst in remappings for arg in ("-r", f"{src}:={dst}")]
    return ["--ros-args", *remaps] if remaps else []


def _make_node(spec: NodeSpec, params: dict[str, Any], context: Any, namespace: str = "") -> Any:
    """The node of ``spec`` in this process: its parameters, the plan's namespace and the spec's remappings."""
    import importlib

    from rclpy.parameter import Parameter

    overrides = [Parameter(k, value=v) for k, v in params.items()]
    module, cls = NODE_CLASSES[spec.executable]
    return getattr(importlib.import_module(module), cls)(
        spec.name, context=context, parameter_overrides=overrides, namespace=namespace,
        cli_args=_ros_args(spec.remappings) or None)


def run_graph(args: dict[str, str], duration_limit: float | None = None, record_npz: Path | None = None,
              preview: Path | None = None, quiet: bool = False, params: dict[str, dict] | None = None,
              speak: str | None = None) -> dict:
    """Run the animate graph in this process until the file ends (audio_source:=file), ``speak`` has been spoken
    (audio_source:=tts; and played, with speaker:=true), ``duration_limit`` seconds pass, or Ctrl-C.
    ``params`` adds parameter overrides per node name. Returns a summary: frames received, where outputs
    went, animator stats."""
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import MultiThreadedExecutor

    plan: GraphPlan = plan_graph(args)
    say = (lambda *a: None) if quiet else print
    if any(spec.executable == "speaker" for spec in plan.nodes):
        # one process: the sound card's callback shares the GIL with TTS, the animator and the executor; hand the
        # GIL over every 1 ms (default 5 ms) and ask PortAudio for 0.2 s of output buffer (the node's default is
        # 0.04 s, for a speaker in its own process), so a busy second does not starve the card into a dropout
        sys.setswitchinterval(0.001)
        params = {**(params or {}), "speaker": {"device_latency": 0.2, **(params or {}).get("speaker", {})}}
    ctx = Context()
    rclpy.init(args=[], context=ctx)
    nodes: list[Any] = []
    spin = None
    t_start = time.monotonic()
    try:
        by_name = {}
        # The animator first (it loads the model), so a file source finds its subscriber at once.
        for spec in sorted(plan.nodes, key=lambda s: s.executable != "animator"):
            one_shot = {"silence_between": False} if speak is not None and spec.executable == "tts_source" else {}
            # (one text, then the run ends when it was played: no silence stream that never drains)
            node = _make_node(spec, {**node_parameters(plan, spec), **one_shot, **(params or {}).get(spec.name, {})},
                              ctx, plan.namespace)
            nodes.append(node)
            by_name[spec.executable] = node
            if spec.executable == "animator" and (record_npz is not None or preview is not None):
                by_name["recorder"] = make_recorder(ctx, plan.namespace)
                nodes.append(by_name["recorder"])
        executor = MultiThreadedExecutor(num_threads=4, context=ctx)
        for node in nodes:
            executor.add_node(node)
        spin = BackgroundSpin(executor, "lsf-ros-executor")
        rviz = _start_rviz(plan, say)
        animator = by_name["animator"]
        say(f"lsf-ros animate: {', '.join(s.name for s in plan.nodes)} running (config {plan.config})")
        say("  outputs: " + "; ".join(f"{animator.resolve_topic_name(t) if not t.startswith('/') else t}"
                                      for t in OUTPUT_TOPICS))
        if "file_source" not in by_name:
            say(f"  listening on {animator.resolve_topic_name('audio')} ({animator.p['audio_type']}); Ctrl-C stops")
        source, tts, speaker = by_name.get("file_source"), by_name.get("tts_source"), by_name.get("speaker")
        if speak is not None and tts is not None:
            wait_until = time.monotonic() + 5.0   # speak once the sound device runs (its start-up stall is over)
            while speaker is not None and not speaker.playback.device_running() and time.monotonic() < wait_until:
                time.sleep(0.02)
            tts.say(speak)
        try:
            while duration_limit is None or time.monotonic() - t_start < duration_limit:
                finished = ((source is not None and source.done.is_set())
                            or (speak is not None and tts is not None and tts.idle()))
                if finished and animator.idle() and (speaker is None or speaker.drained()):
                    # let the last reliable messages arrive; with a speaker, also what a sound server's underrun
                    # delayed behind the DAC times PortAudio reports (up to a second on a starved 2-core machine)
                    time.sleep(0.3 if speaker is None else 1.0)
                    break
                time.sleep(0.05)
        except KeyboardInterrupt:
            say("stopped")
        if rviz is not None:
            rviz.terminate()
        summary = {"frames": by_name["recorder"].count() if "recorder" in by_name else animator.counts["frames"],
                   "published_frames": animator.counts["frames"], "wall_s": round(time.monotonic() - t_start, 3),
                   "topics": [animator.resolve_topic_name(t) if not t.startswith("/") else t for t in OUTPUT_TOPICS],
                   "stats": animator.animator.stats(), "bad_messages": animator.counts["bad_messages"]}
        summary["losses"] = animator.losses(summary["stats"])
        if speaker is not None:
            summary["speaker"] = speaker.playback.stats()
        if "recorder" in by_name:
            rig = animator.animator.rig
            arrays = by_name["recorder"].arrays(animator.p["rate"], rig.faces, rig.vertices)
            npz = Path(record_npz) if record_npz is not None else Path(preview).with_suffix(".npz")
            npz.parent.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(npz, **arrays)
            summary["npz"] = str(npz)
            say(f"  recorded {summary['frames']} frames -> {npz}")
            if preview is not None:
                summary["preview"] = _render_preview(npz, Path(preview), args.get("audio_file") or None, say)
        return summary
    finally:
        if spin is not None:
            spin.stop()
        for node in nodes:
            if hasattr(node, "close"):
                node.close()
            node.destroy_node()
        rclpy.try_shutdown(context=ctx)


def _start_rviz(plan: GraphPlan, say: Any) -> subprocess.Popen | None:
    if not plan.rviz:
        return None
    if shutil.which("rviz2") is None:
        say("  rviz:=true but rviz2 is not installed here; view face/mesh from a ROS 2 machine instead")
        return None
    return subprocess.Popen(["rviz2", "-d", str(plan.rviz_config), *_ros_args(rviz_remappings(plan))])


def _render_preview(npz: Path, mp4: Path, audio: str | None, say: Any) -> str | None:
    try:
        from lsf_core.face.render import render_npz
    except ImportError as err:
        say(f"  no preview: lsf_core.face.render is not available ({err})")
        return None
    out = render_npz(npz, mp4, audio_path=audio)
    say(f"  preview -> {out}")
    return str(out)
