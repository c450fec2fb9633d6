"""lsf-bag replay over loopback with real rclpy processes: make -> replay -> eval.

1. a bag laid out as ``ros2 bag record`` writes it (receive-time log stamps with jitter, unrelated
   topics, no clip list) replayed into a minimal face publisher in its own process;
2. make -> replay through the real ``animator`` node -> eval (offline agreement, plots, video).
"""
from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="ROS 2 wheels not installed (scripts/setup.sh installs them)")

from lsf_core.audio import load_audio  # noqa: E402
from lsf_ros.bags import cli, make, replay
from lsf_ros.bags import evaluate as bag_eval  # noqa: E402
from lsf_ros.bags import io as B  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

# A face publisher as small as it gets: 30 Hz JointState frames on the audio clock, like the animator.
MINI_ANIMATOR = textwrap.dedent("""
    import numpy as np, rclpy, time
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Int16MultiArray
    from lsf_ros import face_messages as fm

    class Mini(Node):
        def __init__(self):
            super().__init__("mini_animator")
            self.pub = self.create_publisher(JointState, "face/blendshapes", 10)
            self.create_subscription(Int16MultiArray, "audio", self.on_audio,
                                     QoSProfile(depth=50, reliability=ReliabilityPolicy.BEST_EFFORT))
            self.t0, self.n, self.k = None, 0, 0

        def on_audio(self, msg):
            x = np.asarray(msg.data, np.float64) / 32768.0
            if self.t0 is None:
                self.t0 = time.time() - x.size / 16000
            self.n += x.size
            while self.k / 30 < self.n / 16000:
                level = min(1.0, 10 * float(np.sqrt(np.mean(x ** 2))))
                self.pub.publish(fm.blendshapes_msg(["jawOpen", "mouthClose"], np.array([level, 0.0]),
                                                    self.t0 + self.k / 30, "face"))
                self.k += 1

    rclpy.init()
    rclpy.spin(Mini())
""")


def _start(args: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen(args, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _stop(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        return proc.communicate(timeout=10)[0] or ""
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()[0] or ""


def _record_like_ros2_bag(path: Path, wav: Path, rng) -> float:
    """Audio as a live capture node publishes it and ``ros2 bag record`` stores it: 1024-sample
    Int16MultiArray chunks, log time = receive time (jittered), plus a topic that is not audio."""
    pcm = np.round(load_audio(wav, 16000) * 32767).astype(np.int16)
    t0 = 1.7e9
    with B.BagWriter(path, storage="mcap") as w:
        for k in range(0, pcm.size, 1024):
            piece = pcm[k:k + 1024]
            recv = t0 + (k + piece.size) / 16000 + float(rng.uniform(0.0, 0.004))
            w.write("/audio", B.encode_audio(w.ts, "std_msgs/Int16MultiArray", piece[:, None], 16000, 0.0), recv,
                    B.SENSOR_QOS)
            if k % 8192 == 0:
                w.write("/status", B.string_msg(w.ts, {"k": k}), recv)
    return pcm.size / 16000


def test_replay_a_ros2_recorded_bag_and_evaluate(tmp_path, speech_wav, ros_env, rng):
    bag = tmp_path / "recorded"
    duration = _record_like_ros2_bag(bag, speech_wav, rng)
    node = _start([sys.executable, "-c", MINI_ANIMATOR], ros_env)
    try:
        out = tmp_path / "out"
        summary = replay.replay_bag(bag, out, wait=20.0, tail=0.6, extra_topics=(), quiet=True)
    finally:
        log = _stop(node)
    assert summary["published"] == int(np.ceil(duration * 16000 / 1024)), log
    recs, types = B.read_topics(out)
    assert types["/face/blendshapes"] == "sensor_msgs/msg/JointState"
    assert len(recs["/audio"]) == summary["published"]
    res = bag_eval.evaluate(out, tmp_path / "rep", run_offline=False, video=False)
    s, clip = res["summary"], res["clips"][0]
    assert clip["frames"]["duration_s"] == pytest.approx(duration, abs=0.01)
    assert abs(s["frames"] - duration * 30) <= 2
    assert s["latency"]["count"] == s["frames"] and 0 < s["latency"]["p50_ms"] < 500
    assert s["dropped_frames"] == 0 and s["duplicated_frames"] == 0


@pytest.mark.parametrize("layout", ["rosbag2 directory", "bare .mcap", "folder without metadata.yaml"])
def test_replay_times_out_with_the_domain_named(tmp_path, speech_wav, ros_env, layout):
    """Replay opens every bag layout other tools write (a bare .mcap, a folder without metadata.yaml; rosbags
    reads them), then waits for the animator. Catches: a replay that refuses them before publishing."""
    bag = tmp_path / "bag"
    make.make_bag([str(speech_wav)], bag)
    if layout != "rosbag2 directory":
        (bag / "metadata.yaml").unlink()
        if layout == "bare .mcap":
            (bag,) = bag.glob("*.mcap")
    with pytest.raises(TimeoutError, match="ROS_DOMAIN_ID="):
        replay.replay_bag(bag, tmp_path / "out", wait=1.0, quiet=True)


@pytest.mark.skipif(importlib.util.find_spec("lsf_core.face.rig") is None,
                    reason="the animator needs lsf_core.face.rig (the avatar), not in this tree yet")
def test_make_replay_eval_through_the_animator_node(tmp_path, speech_wav, ros_env):
    import torch

    from lsf_core.models.registry import build_model, save_model

    torch.manual_seed(0)
    model = save_model(build_model("realtime").eval(), tmp_path / "model.safetensors")
    bag = tmp_path / "in"
    make.make_bag([str(speech_wav)], bag, chunk=0.032)
    rate = 30.0
    node = _start([sys.executable, "-m", "lsf_ros.animator_node", "--ros-args", "-p", f"model:={model}",
                   "-p", f"rate:={rate}"], ros_env)
    try:
        out = tmp_path / "out"
        assert cli.main(["replay", str(bag), "-o", str(out), "--wait", "90", "--tail", "1.5"]) == 0
    finally:
        log = _stop(node)
    rep = tmp_path / "report"
    assert cli.main(["eval", str(out), "-o", str(rep), "--model", str(model), "--video-size", "160"]) == 0, log
    res = json.loads((rep / "metrics.json").read_text())
    s, clip = res["summary"], res["clips"][0]
    duration = clip["frames"]["duration_s"]
    assert s["rate_hz"] == pytest.approx(rate, rel=0.01)
    assert abs(clip["frames"]["frames"] - duration * rate) <= 2, log
    assert s["latency"]["count"] >= clip["frames"]["frames"] and np.isfinite(s["latency"]["p95_ms"])
    # the live node and offline inference are the same computation on the same audio: they agree to float
    # precision at zero lag. Kills: a wrong scale, a timing offset, a dropped or repeated chunk in the node.
    agree = clip["offline_agreement"]
    assert agree["mae"] < 1e-3 and abs(agree["lag_ms"]) <= 5.0, agree
    assert agree["vertex_offset_mve_mm"] < 0.05, agree
    assert (rep / "latency.png").is_file() and (rep / "clip0_speech_blendshapes.png").is_file()
    if importlib.util.find_spec("lsf_core.face.render") is None:     # the renderer lands separately
        assert clip["video"].startswith("skipped")
    else:
        assert clip["video"] == "clip0_speech.mp4" and (rep / "clip0_speech.mp4").stat().st_size > 1000
