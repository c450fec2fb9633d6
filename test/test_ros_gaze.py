"""Head pose and gaze target through a real rclpy graph over loopback: the animator in its own process, audio and
a moving geometry_msgs/PointStamped target from this process; face/head_pose, face/joint_commands and
face/blendshapes back. TF is checked where tf2_ros is installed (not among the PyPI wheels)."""
from __future__ import annotations

import math
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="ROS 2 wheels not installed (scripts/setup.sh installs them)")

from geometry_msgs.msg import PointStamped, PoseStamped  # noqa: E402
from rclpy.context import Context  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402

from lsf_core.audio import load_audio  # noqa: E402
from lsf_core.face.head_pose import FACE_TO_PARENT  # noqa: E402
from lsf_ros.audio_adapters import make_adapter  # noqa: E402
from lsf_ros.face_messages import to_sec  # noqa: E402
from lsf_ros.head_gaze import import_tf2  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEEP = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
CHUNK_S = 0.064
MAP = """joints:
  - {name: neck_pan, weights: {headYaw: 1.0}, min: -1.0, max: 1.0, max_velocity: 0}
  - {name: eye_pan, weights: {eyeYaw: 1.0}, min: -1.0, max: 1.0, max_velocity: 0}
  - {name: neck_tilt, weights: {headPitch: 1.0}, min: -0.02, max: 0.02, max_velocity: 0.1}
"""


def _yaw_of(msg: PoseStamped) -> float:
    """Head yaw (rad, face conventions) from the face frame's orientation in the parent frame."""
    q = msg.pose.orientation
    x, y, z, w = q.x, q.y, q.z, q.w
    r = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                  [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                  [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
    face = FACE_TO_PARENT.T @ r            # the head's rotation in face axes
    forward = face @ np.array([0.0, 0.0, 1.0])
    return math.atan2(forward[0], forward[2])


def test_gaze_follows_a_moving_target_and_returns_when_it_is_lost(ros_env, model_path, speech_wav, tmp_path):
    """Kills: the face/gaze_target subscription not reaching the layer, the head not following (no head share),
    joint commands without the pose inputs or ignoring limits/velocity, a stale target never dropped, a bad
    target crashing the node."""
    rmap = tmp_path / "map.yaml"
    rmap.write_text(MAP)
    params = {"model": str(model_path), "rate": 30.0, "mesh_rate": 0.0, "retarget_map": str(rmap),
              "gaze_timeout": 0.6, "flush_after": 1.0, "clock_resync": 2.0}
    args = [sys.executable, "-m", "lsf_ros.animator_node", "--ros-args", "-r", "__ns:=/gz"]
    for k, v in params.items():
        args += ["-p", f"{k}:={v}"]
    proc = subprocess.Popen(args, env=ros_env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ctx = Context()
    rclpy.init(context=ctx, domain_id=int(ros_env["ROS_DOMAIN_ID"]))
    executor = SingleThreadedExecutor(context=ctx)
    lock = threading.Lock()
    poses, joints, blends = [], [], []
    try:
        node = rclpy.create_node("lsf_gaze_test", context=ctx)
        executor.add_node(node)
        threading.Thread(target=executor.spin, daemon=True).start()

        def keep(store, conv):
            def cb(m):
                with lock:
                    store.append(conv(m))
            return cb

        subs = [node.create_subscription(PoseStamped, "/gz/face/head_pose",
                                         keep(poses, lambda m: (to_sec(m.header.stamp), m.header.frame_id, _yaw_of(m),
                                                                time.time())), DEEP),
                node.create_subscription(JointState, "/gz/face/joint_commands",
                                         keep(joints, lambda m: (to_sec(m.header.stamp), list(m.name),
                                                                 np.array(m.position), time.time())), DEEP),
                node.create_subscription(JointState, "/gz/face/blendshapes",
                                         keep(blends, lambda m: to_sec(m.header.stamp)), DEEP)]
        adapter = make_adapter("std_msgs/Int16MultiArray", 16000, 1)
        pub_audio = node.create_publisher(adapter.msg_class(), "/gz/audio", 50)
        pub_target = node.create_publisher(PointStamped, "/gz/face/gaze_target", 10)
        deadline = time.monotonic() + 90
        while not (all(s.get_publisher_count() for s in subs) and pub_audio.get_subscription_count()
                   and pub_target.get_subscription_count()):
            assert proc.poll() is None, proc.communicate()[0][-3000:]
            assert time.monotonic() < deadline, "the animator did not come up"
            time.sleep(0.1)
        # the best-effort audio reader matches a little after the publisher sees it: lead in with silence until
        # frames come back (the stream then goes on without a gap)
        n = int(CHUNK_S * 16000)
        lead_start = time.time()
        i = 0
        while not blends:
            assert time.time() - lead_start < 30, "no frames for the lead-in silence"
            due = lead_start + (i + 1) * CHUNK_S
            time.sleep(max(0.0, due - time.time()))
            pub_audio.publish(adapter.encode(np.zeros(n, np.float32), due - CHUNK_S))
            i += 1
        lead_end = lead_start + i * CHUNK_S

        speech = load_audio(speech_wav)
        audio = np.concatenate([speech, np.zeros(5 * 16000, np.float32)])   # speech, then silence: frames go on
        start = lead_end
        target_until = start + 5.0
        sent = []
        for i, pos in enumerate(range(0, len(audio), n)):
            due = start + (pos + n) / 16000
            time.sleep(max(0.0, due - time.time()))
            pub_audio.publish(adapter.encode(audio[pos:pos + n], due - n / 16000))
            now = time.time()
            if now < target_until:   # a person walking left-right in front, 1 m away, 0.2 Hz
                y = 0.6 * math.sin(2 * math.pi * 0.2 * (now - start))
                msg = PointStamped()
                msg.header.frame_id = "head_base" if i % 2 else ""
                msg.point.x, msg.point.y, msg.point.z = 1.0, y, 0.0
                pub_target.publish(msg)
                sent.append((now, math.atan2(y, 1.0 - 0.08)))
            if i == 10:   # bad targets: logged, ignored, the node goes on
                bad = PointStamped()
                bad.point.x = float("nan")
                pub_target.publish(bad)
                far = PointStamped()
                far.header.frame_id = "map" if import_tf2() is None else "no_such_frame"
                far.point.x = 1.0
                pub_target.publish(far)
        end = start + len(audio) / 16000
        wait_until = time.monotonic() + 60   # a loaded machine may run behind real time: wait for the last frames
        seen, quiet_since = len(blends), time.monotonic()
        while not (blends and blends[-1] >= end - 0.1) and time.monotonic() < wait_until \
                and time.monotonic() - quiet_since < 3.0:
            assert proc.poll() is None, "the animator died"
            time.sleep(0.1)
            if len(blends) != seen:
                seen, quiet_since = len(blends), time.monotonic()
        assert proc.poll() is None, "the animator died"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            logs = proc.communicate(timeout=15)[0]
        except subprocess.TimeoutExpired:
            proc.kill()
            logs = proc.communicate()[0]
        executor.shutdown()
        rclpy.try_shutdown(context=ctx)
    assert "Traceback" not in logs, logs[-4000:]
    assert "gaze target" in logs, logs[-3000:]        # the bad ones were reported

    with lock:
        span = (poses[-1][0] - poses[0][0], max(np.diff([p[0] for p in poses])), poses[0][0] - start)
        assert abs(len(poses) - len(blends)) <= 2 and len(poses) > 150, (len(poses), len(blends), span)
        assert {p[1] for p in poses} == {"head_base"}
        names = joints[0][1]
        j = np.array([x[2] for x in joints])
        jt = np.array([x[0] for x in joints])
        jr = np.array([x[3] for x in joints])   # when each frame arrived: the gaze it shows was set then
    # pose stamps are the audio time the frames show (the wall clock of publication here)
    pose_t = np.array([p[0] for p in poses])
    head_yaw = np.array([p[2] for p in poses])
    gaze = j[:, names.index("neck_pan")] + j[:, names.index("eye_pan")]
    st, sy = np.array([s[0] for s in sent]), np.array([s[1] for s in sent])
    during = (jr > st[0] + 1.0) & (jr < st[-1] - 0.2)
    # the gaze reacts to a target within a few hundred ms (reaction, pursuit, the head's lag): find the lag
    lags = np.arange(-0.2, 1.5, 0.02)
    errs = [np.abs(gaze[during] - np.interp(jr[during] - lag, st, sy)).mean() for lag in lags]
    lag = lags[int(np.argmin(errs))]
    want = np.interp(jr[during] - lag, st, sy)
    assert -0.1 < lag < 1.0, lag
    assert np.corrcoef(gaze[during], want)[0, 1] > 0.9
    assert min(errs) < math.radians(6), np.degrees(min(errs))
    # the head took part: it turns with the target, by less than the eyes and head together
    head_during = np.interp(jt[during], pose_t, head_yaw)   # the same frames, by stamp
    assert np.corrcoef(head_during, want)[0, 1] > 0.7
    assert 0.25 < np.ptp(head_during) / np.ptp(want) < 0.9
    assert np.allclose(j[:, names.index("neck_pan")], np.interp(jt, pose_t, head_yaw), atol=0.02)
    # lost target: natural gaze again within gaze_timeout + a second
    later = jr > st[-1] + 1.8
    assert later.sum() > 10 and np.abs(gaze[later]).max() < math.radians(16)
    # a tight joint keeps its limits and speed
    tilt = j[:, names.index("neck_tilt")]
    assert np.abs(tilt).max() <= 0.02 + 1e-9
    assert (np.abs(np.diff(tilt)) / np.maximum(np.diff(jt), 1e-6)).max() <= 0.1 + 1e-6
