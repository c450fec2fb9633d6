"""Soak: long speech through a real animator process, faster than real time: every frame, bounded memory,
steady processing time. The hour-long run is ``slow``; its figures are in docs/reliability.md:

    LSF_SOAK_JSON=soak.json .venv/bin/pytest --run-slow -s test/test_reliability_soak.py -k hour
"""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="ROS 2 wheels not installed (scripts/setup.sh installs it)")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
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
CHUNK = 4096          # 256 ms messages: fewer messages per audio second, so the soak runs faster
SIM_START = 1000.0    # s: sim time of the first sample
AHEAD_S = 0.6         # flow control: audio published but not yet animated, at most (look-ahead + ~1 chunk queued)


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def soak(seconds: float, env: dict, speech: np.ndarray, model_path: Path, stall: float) -> dict:
    """Feed ``seconds`` of audio as fast as the node keeps up; fail if no frame arrives for ``stall`` s (a hang,
    not a speed budget: throughput is measured by benchmarks)."""
    ns = "/soak"
    # sim time, /clock = the end of the newest chunk's audio: the audio runs faster than real time, so on wall time
    # its unstamped chunks would (rightly) be re-anchored to their arrival
    proc = _start("lsf_ros.animator_node", ns, {"model": str(model_path), "rate": RATE, "diagnostics_period": 0.5,
                                                 "clock_resync": 5.0, "flush_after": 1.0, "use_sim_time": True}, env)
    ctx = Context()
    rclpy.init(context=ctx, domain_id=int(env["ROS_DOMAIN_ID"]))
    executor = SingleThreadedExecutor(context=ctx)
    stamps: list[float] = []
    diags: list[dict] = []
    try:
        node = rclpy.create_node("lsf_soak", context=ctx)
        executor.add_node(node)
        node.create_subscription(JointState, f"{ns}/face/blendshapes", lambda m: stamps.append(to_sec(m.header.stamp)),
                                 QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE))

        def on_diag(arr):
            for s in arr.status:
                if s.name.startswith(f"{ns}/animator"):
                    diags.append({"t": time.monotonic(), **{v.key: v.value for v in s.values}})

        node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
        adapter = make_adapter("std_msgs/Int16MultiArray")
        pub = node.create_publisher(adapter.msg_class(), f"{ns}/audio", 50)
        clock = node.create_publisher(Clock, "/clock", 10)

        def tick(t: float) -> None:
            clock.publish(Clock(clock=sec_to_stamp(SIM_START + t, type(Clock().clock))))
        threading.Thread(target=executor.spin, daemon=True).start()
        _wait(lambda: pub.get_subscription_count() > 0 and node.count_publishers(f"{ns}/face/blendshapes") > 0,
              120, "the animator to start", [proc])
        tick(0.0)
        time.sleep(1.0)   # the best-effort reader matches a little after the publisher sees it
        n_chunks = int(seconds * 16000) // CHUNK
        reps = int(np.ceil(n_chunks * CHUNK / len(speech)))
        audio = np.tile(speech, reps)[: n_chunks * CHUNK]
        rss: list[tuple[float, float]] = []
        t_start = last_progress = time.monotonic()
        seen = 0
        for k in range(n_chunks):
            while k * CHUNK / 16000 - len(stamps) / RATE > AHEAD_S and time.monotonic() - last_progress < stall:
                time.sleep(0.002)
                if len(stamps) > seen:
                    seen, last_progress = len(stamps), time.monotonic()
            if time.monotonic() - last_progress >= stall or proc.poll() is not None:
                raise AssertionError(f"soak stalled at {k}/{n_chunks} chunks, {len(stamps)} frames\n"
                                     f"{_stop([proc])[-3000:]}")
            tick((k + 1) * CHUNK / 16000)
            time.sleep(0.002)   # the clock before the chunk it dates
            pub.publish(adapter.encode(audio[k * CHUNK:(k + 1) * CHUNK], 0.0))
            if k % max(1, n_chunks // 200) == 0:
                rss.append((k * CHUNK / 16000, _rss_mb(proc.pid)))
        fed = time.monotonic() - t_start   # on sim time the node's diagnostics timer stops with the last tick
        _wait(lambda: len(stamps) >= n_chunks * CHUNK / 16000 * RATE - 1, 30, "the last frames", [proc])
        time.sleep(1.5)   # flush_after and a last diagnostics message
        wall = time.monotonic() - t_start
        rss.append((seconds, _rss_mb(proc.pid)))
    finally:
        logs = _stop([proc])
        executor.shutdown()
        rclpy.try_shutdown(context=ctx)
    assert "Traceback" not in logs, logs[-3000:]
    audio_s = n_chunks * CHUNK / 16000
    st = np.array(stamps)
    steps = np.diff(st)
    # processing time (chunk received -> its frames published) per tenth of the feeding
    tenths = []
    for i in range(10):
        lo, hi = t_start + fed * i / 10, t_start + fed * (i + 1) / 10
        window = [float(d["processing_ms_p95"]) for d in diags if lo <= d["t"] < hi and "processing_ms_p95" in d]
        tenths.append(round(float(np.median(window)), 1) if window else float("nan"))
    base = np.median([r for t, r in rss if 0.05 * audio_s <= t <= 0.1 * audio_s] or [rss[0][1]])
    last = diags[-1] if diags else {}
    return {
        "audio_s": audio_s, "wall_s": round(wall, 1), "speed_x_real_time": round(audio_s / wall, 2),
        "chunk_samples": CHUNK, "rate_hz": RATE,
        "frames": len(st), "expected_frames": int(round(audio_s * RATE)),
        # a time line moved back (a stale /clock dated most chunks of a window a chunk early, see ChunkClock) starts
        # a new stream there: one step back per move, each counted in clock_resets; every other step is one frame
        "stamp_steps_back": int((steps < 0).sum()), "clock_resets": int(last.get("clock_resets", -1)),
        "stamp_step_min_ms": round(1000 * float(steps[steps >= 0].min()), 3),
        "stamp_step_max_ms": round(1000 * float(steps[steps >= 0].max()), 3),
        "rss_mb_start": round(float(base), 1), "rss_mb_end": round(rss[-1][1], 1),
        "rss_mb_max": round(max(r for _, r in rss), 1),
        "rss_growth_pct": round(100.0 * (rss[-1][1] - base) / base, 2),
        "processing_ms_p95_by_tenth": tenths,
        "dropped_chunks": int(last.get("dropped_chunks", -1)), "bad_messages": int(last.get("bad_messages", -1)),
        "errors": int(last.get("errors", -1)), "rtf": float(last.get("rtf", "nan")),
    }


def _check(r: dict) -> None:
    # each counted move back of the time line starts a new stream, whose frame grid can add one frame
    assert -1 <= r["frames"] - r["expected_frames"] <= 1 + max(0, r["clock_resets"]), r
    assert r["stamp_step_min_ms"] == pytest.approx(1000 / RATE, abs=0.01) and r["stamp_step_max_ms"] == pytest.approx(
        1000 / RATE, abs=0.01), f"frames missing or repeated: {r}"
    assert r["stamp_steps_back"] <= min(2, r["clock_resets"]), f"stamps stepped back without a counted reason: {r}"
    assert r["dropped_chunks"] == 0 and r["bad_messages"] == 0 and r["errors"] == 0, r
    assert r["rss_growth_pct"] <= 5.0, r
    first, last = r["processing_ms_p95_by_tenth"][1], r["processing_ms_p95_by_tenth"][-1]
    assert last <= 1.5 * first + 10.0, f"processing time grows: {r}"


def _run(seconds: float, ros_env, speech_wav, model_path, stall: float) -> dict:
    r = soak(seconds, ros_env, load_audio(speech_wav, 16000), model_path, stall)
    print(json.dumps(r, indent=2))
    if os.environ.get("LSF_SOAK_JSON"):
        Path(os.environ["LSF_SOAK_JSON"]).write_text(json.dumps(r, indent=2))
    _check(r)
    return r


def test_soak_two_minutes(ros_env, speech_wav, model_path):
    _run(120.0, ros_env, speech_wav, model_path, stall=30.0)


@pytest.mark.slow
def test_soak_an_hour(ros_env, speech_wav, model_path):
    _run(3600.0, ros_env, speech_wav, model_path, stall=30.0)
