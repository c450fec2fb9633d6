"""Time you can trust: a real animator process under faults that used to leave its face stamps wrong for good or
lose audio unreported (issue #20), each checked as a recorder would: every frame's stamp against wall (or sim)
time at receipt, and the /diagnostics counters. Figures: docs/reliability.md."""
from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="ROS 2 wheels not installed (scripts/setup.sh installs them)")

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from rclpy.context import Context  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from test_ros_nodes import _start, _stop, _wait  # noqa: E402

from lsf_core.audio import load_audio  # noqa: E402
from lsf_ros.audio_adapters import make_adapter, sec_to_stamp  # noqa: E402
from lsf_ros.face_messages import to_sec  # noqa: E402

RATE = 30.0
CHUNK = 1024           # 64 ms at 16 kHz
RESYNC = 0.5           # the default clock_resync


class Recorder:
    """One animator process (namespace ``ns``) and a client that keeps every face frame (stamp, largest jaw/mouth
    weight, wall time and sim time at receipt) and every /diagnostics status of it."""

    def __init__(self, env: dict, model_path, ns: str, sim_time: bool = False, **params):
        self.ns, self.env = ns, env
        self.offset = 1000.0 - time.time() if sim_time else 0.0   # sim time = wall time + offset
        self.proc = _start("lsf_ros.animator_node", ns, {
            "model": str(model_path), "rate": RATE, "mesh_rate": 0.0, "diagnostics_period": 0.3,
            "audio_type": "std_msgs/Float32MultiArray", "use_sim_time": sim_time, **params}, env)
        self.ctx = Context()
        rclpy.init(context=self.ctx, domain_id=int(env["ROS_DOMAIN_ID"]))
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.node = rclpy.create_node("lsf_recorder", context=self.ctx)
        self.executor.add_node(self.node)
        self.frames: list[tuple[float, float, float, float]] = []
        self.diags: list = []
        self.node.create_subscription(JointState, f"{ns}/face/blendshapes", self._on_frame,
                                      QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE))
        self.node.create_subscription(DiagnosticArray, "/diagnostics", lambda a: self.diags.extend(
            s for s in a.status if s.name.startswith(f"{ns}/animator")), 50)
        self.adapter = make_adapter("std_msgs/Float32MultiArray")
        self.pub = self.node.create_publisher(self.adapter.msg_class(), f"{ns}/audio", QoSProfile(depth=100))
        self._stop_clock = threading.Event()
        if sim_time:
            clock_pub = self.node.create_publisher(Clock, "/clock", 10)
            threading.Thread(target=self._tick, args=(clock_pub,), daemon=True).start()
        threading.Thread(target=self.executor.spin, daemon=True).start()
        _wait(lambda: self.pub.get_subscription_count() > 0 and self.node.count_publishers(
            f"{ns}/face/blendshapes") > 0 and self.diags, 120, "the animator to start", [self.proc])
        time.sleep(1.0)   # the best-effort reader matches a little after the publisher sees it

    def _tick(self, pub) -> None:
        while not self._stop_clock.wait(0.005):
            pub.publish(Clock(clock=sec_to_stamp(self.sim_now(), type(Clock().clock))))

    def sim_now(self) -> float:
        return time.time() + self.offset

    def _on_frame(self, m) -> None:
        mouth = max(v for n, v in zip(m.name, m.position) if n.startswith(("jaw", "mouth")))
        self.frames.append((to_sec(m.header.stamp), mouth, time.time(), self.sim_now()))

    def diag(self, key: str, cast=float):
        return cast({v.key: v.value for v in self.diags[-1].values}[key])

    def paced(self, audio: np.ndarray, speed: float = 1.0, chunk: int = CHUNK) -> None:
        """Publish ``audio`` in ``chunk``-sample messages, each when ``speed`` x real time has captured it."""
        t0 = time.time()
        for i in range(0, len(audio), chunk):
            time.sleep(max(0.0, t0 + (i + chunk) / 16000 / speed - time.time()))
            self.pub.publish(self.adapter.encode(audio[i:i + chunk], 0.0))

    def settle(self) -> None:
        _wait(lambda: self.frames and time.time() - self.frames[-1][2] > 0.8, 30, "the animator to go quiet",
              [self.proc])

    def close(self) -> str:
        self._stop_clock.set()
        logs = _stop([self.proc])
        self.executor.shutdown()
        rclpy.try_shutdown(context=self.ctx)
        assert "Traceback" not in logs, logs[-3000:]
        return logs


def _speech(speech_wav, seconds: float) -> np.ndarray:
    x = load_audio(speech_wav, 16000)
    return np.tile(x, int(np.ceil(seconds * 16000 / len(x))))[: int(seconds * 16000)]


def test_audio_faster_than_real_time_leaves_no_stamp_in_the_future(ros_env, speech_wav, model_path):
    """Issue #20 fault 3: unstamped audio at 10x real time (4 s, 40 s of audio), then in real time. Catches a stamp
    clock that only re-anchors when chunks come late: the later frames were stamped 36 s in the future, for good."""
    rec = Recorder(ros_env, model_path, "/fast")
    try:
        rec.paced(_speech(speech_wav, 2.0))
        t_fault = time.time()
        rec.paced(_speech(speech_wav, 40.0), speed=10.0)
        t_end = time.time()
        rec.paced(_speech(speech_wav, 6.0))
        t_last = time.time()
        rec.settle()
        jumps, dropped = rec.diag("clock_jumps", int), rec.diag("dropped_chunks", int)
    finally:
        logs = rec.close()
    f = np.array(rec.frames)
    ahead = f[:, 0] - f[:, 2]   # stamp - wall time at receipt: > 0 is a frame stamped in the future
    assert ahead.max() <= RESYNC + 0.05, f"a frame stamped {ahead.max():.2f} s in the future"
    # from 3 s after the fault to the last message (the frames after it wait flush_after for audio that never comes)
    after = f[(f[:, 2] >= t_end + 3.0) & (f[:, 2] < t_last)]
    before = f[f[:, 2] < t_fault]
    late = after[:, 2] - after[:, 0]
    assert len(after) >= 2.5 * RATE and late.min() >= 0.0 and late.max() <= 1.0, (late.min(), late.max())
    normal = np.median(before[:, 2] - before[:, 0])
    print(f"10x: most ahead {ahead.max():.3f} s; latency p50 {normal:.3f} s before, {np.median(late):.3f} s "
          f"(max {late.max():.3f}) 3 s after; {jumps} clock jumps, {dropped} dropped chunks")
    assert abs(np.median(late) - normal) <= 0.2, f"latency {np.median(late):.3f} s after, {normal:.3f} s before"
    assert jumps > 0 and dropped > 0
    assert "the sample count ran ahead of arrival" in logs


def test_a_ros_clock_jumping_back_and_forth_is_followed(ros_env, speech_wav, model_path):
    """Issue #20 fault 2: use_sim_time and a /clock that jumps back 10 s (a looping bag), then forward 30 s. Catches
    frames that keep the old time line (they were 9.8 s in the future until the node restarted) and jumps that are
    not logged."""
    rec = Recorder(ros_env, model_path, "/sim", sim_time=True)
    try:
        rec.paced(_speech(speech_wav, 3.0))
        rec.offset -= 10.0
        t_back = time.time()
        rec.paced(_speech(speech_wav, 4.0))
        rec.offset += 30.0
        t_forward = time.time()
        rec.paced(_speech(speech_wav, 4.0))
        rec.settle()
        time_jumps = rec.diag("time_jumps", int)
    finally:
        logs = rec.close()
    f = np.array(rec.frames)
    t = f[:, 2]
    for part in (f[t < t_back], f[(t >= t_back + 2.0) & (t < t_forward)], f[t >= t_forward + 2.0]):
        late = part[:, 3] - part[:, 0]   # sim time at receipt - stamp
        print(f"sim time - stamp at receipt: {late.min():.3f}..{late.max():.3f} s")
        assert len(part) >= 1.5 * RATE and late.min() >= 0.0 and late.max() <= 1.0, (late.min(), late.max())
    back = re.findall(r"the ROS clock jumped back by ([0-9.]+) s", logs)
    forward = re.findall(r"the ROS clock jumped forward by ([0-9.]+) s", logs)
    assert time_jumps == 2 and len(back) == 1 and len(forward) == 1, (time_jumps, back, forward)
    assert abs(float(back[0]) - 10.0) < 0.1 and abs(float(forward[0]) - 30.0) < 0.1, (back, forward)


def test_a_message_the_node_accepts_is_animated_whole(ros_env, speech_wav, model_path):
    """Issue #20 fault 5: one 9 s message (within max_message = 10 s, beyond max_queue = 2 s). Catches an engine
    limit that disagrees with the node's: its first 7 s became silence, reported as "1 dropped chunk"."""
    rec = Recorder(ros_env, model_path, "/long", audio_reliability="reliable")
    try:
        rec.pub.publish(rec.adapter.encode(_speech(speech_wav, 9.0), 0.0))
        _wait(lambda: len(rec.frames) >= 9 * RATE - 4, 40, "the frames of the message", [rec.proc])
        rec.settle()
        time.sleep(0.7)
        dropped, silenced = rec.diag("dropped_chunks", int), rec.diag("silenced_s")
    finally:
        rec.close()
    f = np.array(rec.frames)
    print(f"9 s message: {len(f)} frames, {dropped} dropped chunks, {silenced} s silenced")
    assert abs(len(f) - 9 * RATE) <= 4, len(f)
    for k in range(8):   # every second of it moves the mouth (silence relaxes it to < 0.05 within 0.2 s)
        assert f[(f[:, 0] >= f[0, 0] + k) & (f[:, 0] < f[0, 0] + k + 1), 1].max() > 0.3, f"second {k} is silent"
    assert dropped == 0 and silenced == 0.0


def test_every_loss_is_counted_in_seconds_and_the_level_recovers(ros_env, speech_wav, model_path):
    """Issue #20 fault 4: the node frozen for 3 s (SIGSTOP/SIGCONT) under a real-time source, then 1-sample messages
    as fast as they can be sent. Catches audio lost in transport, or dropped by the queue, that no counter shows
    (dropped_chunks stayed 0; 63 % of 1-sample messages vanished uncounted) and a level that never returns to OK.
    Where the freeze's audio goes varies from run to run (DDS drops all of it, counted as lost, or delivers it and
    the queue drops what exceeds max_queue while the worker animates the rest), so the seconds are checked as a
    balance: every second sent is a face frame or is counted lost or dropped."""
    rec = Recorder(ros_env, model_path, "/loss")
    audio = _speech(speech_wav, 12.0)
    try:
        sender = threading.Thread(target=rec.paced, args=(audio,))
        sender.start()
        time.sleep(3.0)
        rec.proc.send_signal(signal.SIGSTOP)
        time.sleep(3.0)
        rec.proc.send_signal(signal.SIGCONT)
        t_cont = time.time()
        sender.join()
        rec.settle()
        warn = [d.message for d in rec.diags if d.level == DiagnosticStatus.WARN]
        _wait(lambda: rec.diags[-1].level == DiagnosticStatus.OK, 15, "OK again", [rec.proc])
        n = len(audio) // CHUNK + (len(audio) % CHUNK > 0)
        chunks, lost = rec.diag("chunks", int), rec.diag("lost_messages", int)
        lost_s, dropped_s = rec.diag("lost_s"), rec.diag("dropped_s")
        animated_s = len(rec.frames) / RATE
        # 1-sample messages, as fast as one thread sends them, then one normal message that ends the gap count
        sent = 0
        t_end = time.time() + 1.0
        while time.time() < t_end:
            rec.pub.publish(rec.adapter.encode(audio[sent % len(audio):sent % len(audio) + 1], 0.0))
            sent += 1
        rec.pub.publish(rec.adapter.encode(audio[:CHUNK], 0.0))
        _wait(lambda: rec.diag("chunks", int) + rec.diag("lost_messages", int) >= chunks + lost + sent + 1, 30,
              "every 1-sample message received or counted lost", [rec.proc])
        chunks1, lost1 = rec.diag("chunks", int) - chunks, rec.diag("lost_messages", int) - lost
    finally:
        rec.close()
    print(f"freeze: {n} messages, {chunks} received, {lost} lost ({lost_s:.3f} s), {dropped_s:.3f} s dropped; "
          f"{animated_s:.3f} s animated; 1-sample: {sent} sent, {chunks1} received, {lost1} lost")
    assert chunks + lost == n, (chunks, lost, n)
    # the balance, within 0.5 s: a time line's first and last frames (look-ahead tail) are the only difference
    assert abs(animated_s + lost_s + dropped_s - len(audio) / 16000) <= 0.5, (animated_s, lost_s, dropped_s)
    # 3 s frozen and max_queue 2 s: most of a second goes, less what the worker animates while the backlog arrives
    assert lost_s + dropped_s >= 0.5, (lost_s, dropped_s)
    assert any("lost in transport" in m or "dropped" in m for m in warn), warn
    assert chunks1 + lost1 == sent + 1, (chunks1, lost1, sent)
    f = np.array(rec.frames)
    assert (f[:, 0] - f[:, 2]).max() <= RESYNC + 0.05, "a frame stamped in the future"
    after = f[(f[:, 2] >= t_cont + 3.0) & (f[:, 2] < t_cont + 5.5)]
    assert len(after) and (after[:, 2] - after[:, 0]).max() <= 1.0


def test_two_publishers_on_the_audio_topic_are_not_spliced(ros_env, speech_wav, model_path):
    """Issue #20 fault 1: two publishers on the audio topic (two microphones misconfigured), both real time, then
    both stop and a third comes. Catches spliced streams (frames at twice the rate, stamps gaining 1 s per second,
    the next source stamped 5.5 s in the future for good) and two publishers that nobody is told about."""
    rec = Recorder(ros_env, model_path, "/two")
    other = rec.node.create_publisher(rec.adapter.msg_class(), "/two/audio", QoSProfile(depth=100))
    audio = _speech(speech_wav, 5.0)
    try:
        _wait(lambda: other.get_subscription_count() > 0, 10, "the second publisher to match", [rec.proc])
        time.sleep(1.0)
        t0 = time.time()
        for i in range(0, len(audio), CHUNK):   # both in real time, interleaved half a chunk apart
            time.sleep(max(0.0, t0 + (i + CHUNK) / 16000 - time.time()))
            rec.pub.publish(rec.adapter.encode(audio[i:i + CHUNK], 0.0))
            time.sleep(CHUNK / 32000)
            other.publish(rec.adapter.encode(audio[::-1][i:i + CHUNK], 0.0))
        both = [d for d in rec.diags if d.level == DiagnosticStatus.WARN and "publishers" in d.message]
        sending = max(int({v.key: v.value for v in d.values}["publishers_sending"]) for d in rec.diags)
        rec.settle()
        time.sleep(1.5)
        third = rec.node.create_publisher(rec.adapter.msg_class(), "/two/audio", QoSProfile(depth=100))
        _wait(lambda: third.get_subscription_count() > 0, 10, "the third publisher to match", [rec.proc])
        time.sleep(1.0)
        t_third = time.time()
        for i in range(0, len(audio), CHUNK):
            time.sleep(max(0.0, t_third + (i + CHUNK) / 16000 - time.time()))
            third.publish(rec.adapter.encode(audio[i:i + CHUNK], 0.0))
        rec.settle()
        ignored, publishers = rec.diag("ignored_messages", int), rec.diag("publishers", int)
        final = {v.key: v.value for v in rec.diags[-1].values}
    finally:
        logs = rec.close()
    f = np.array(rec.frames)
    first, last = f[f[:, 0] < t_third - 0.5], f[f[:, 0] >= t_third - 0.5]   # by stamp: a loaded node lags
    for part in (first, last):   # one stream each time: its duration at 30 Hz, stamps on time
        assert abs(len(part) - 5.0 * RATE) <= 4, (len(first), len(last), final, logs[-3000:])
        np.testing.assert_allclose(np.diff(part[:, 0]), 1 / RATE, atol=1e-6)
        late = part[:-12, 2] - part[:-12, 0]   # the last ones wait flush_after
        assert late.min() >= 0.0 and late.max() <= 1.0, (late.min(), late.max())
    print(f"two publishers: {len(first)} and {len(last)} frames, {ignored} messages ignored")
    assert both and sending == 2 and publishers == 3
    assert abs(ignored - len(audio) / CHUNK) <= 2, ignored
    assert "publishers on /two/audio: following one" in logs


READER = """
import sys
import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
rclpy.init()
node = rclpy.create_node("lsf_frozen_reader")
got = []
node.create_subscription(JointState, sys.argv[1], got.append, QoSProfile(depth=10000,
                         reliability=ReliabilityPolicy.RELIABLE))
idle = 0
while not (got and idle >= 40):   # until 40 waits of 50 ms in a row without a frame (not counting a freeze)
    before = len(got)
    rclpy.spin_once(node, timeout_sec=0.05)
    idle = idle + 1 if len(got) == before else 0
print("frames", len(got), flush=True)
"""


def test_a_subscriber_frozen_for_3_s_misses_no_frame(ros_env, speech_wav, model_path):
    """A reliable subscriber whose whole process stalls (SIGSTOP for 3 s: swap, a debugger, a starved machine) while
    the node animates real-time speech. Catches frame topics whose history is shorter than frame_history (depth 30
    lost 62 of 240 frames here; a 1.5 s stall of a test process once lost joint commands in CI)."""
    rec = Recorder(ros_env, model_path, "/frz")
    reader = subprocess.Popen([sys.executable, "-c", READER, "/frz/face/blendshapes"], env=ros_env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait(lambda: rec.node.count_subscribers("/frz/face/blendshapes") >= 2, 30, "the second subscriber",
              [rec.proc, reader])
        time.sleep(1.0)
        sender = threading.Thread(target=rec.paced, args=(_speech(speech_wav, 8.0),))
        sender.start()
        time.sleep(2.0)
        reader.send_signal(signal.SIGSTOP)
        time.sleep(3.0)
        reader.send_signal(signal.SIGCONT)
        sender.join()
        rec.settle()
    finally:
        reader.send_signal(signal.SIGCONT)
        try:
            logs = reader.communicate(timeout=30.0)[0]
        except subprocess.TimeoutExpired:
            reader.kill()
            logs = reader.communicate()[0]
        rec.close()
    got = re.findall(r"frames (\d+)", logs)
    print(f"frozen reader: {got} frames, the live one {len(rec.frames)}")
    assert len(rec.frames) >= 8 * RATE - 3 and got and int(got[0]) == len(rec.frames), (got, len(rec.frames), logs)
