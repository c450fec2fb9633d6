"""``lsf-ros bench-latency``: end-to-end latency of the animator node, audio chunk published -> frame received.

Starts the ``animator`` in its own process (default parameters unless given), publishes speech as
std_msgs/Int16MultiArray in real time from this process, and times every face/blendshapes frame that
comes back. Two numbers per frame, both on this machine's clock:

- ``from_chunk``: frame received minus the publish time of the chunk holding the audio the frame shows
  (what a robot sees: the sound reached ROS, then the face moved);
- ``from_audio``: frame received minus the frame's audio time (adds the wait for the chunk to fill).

Stamps of headerless audio are anchored at the first chunk's arrival, so both are low by the one-way
transport delay (well under 1 ms on loopback).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from lsf_core.audio import load_audio
from lsf_ros.domain import default_ros_env
from lsf_ros.spinning import BackgroundSpin


def _pct(x: np.ndarray) -> dict[str, float]:
    return {"p50": round(float(np.percentile(x, 50)), 2), "p95": round(float(np.percentile(x, 95)), 2),
            "max": round(float(x.max()), 2), "mean": round(float(x.mean()), 2)}


def measure(audio_path: Path, seconds: float, chunk: int, rate: float, params: dict[str, str],
            startup_timeout: float = 120.0) -> dict:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Int16MultiArray
    from tqdm import tqdm

    from lsf_ros.audio_adapters import make_adapter

    default_ros_env()
    sr = 16000
    speech = load_audio(audio_path, sr)
    n_total = int(seconds * sr)
    audio = np.tile(speech, int(np.ceil(n_total / len(speech))))[:n_total]
    adapter = make_adapter("std_msgs/Int16MultiArray", sr, 1)
    ns = f"/lsf_bench_{os.getpid()}"
    cmd = [sys.executable, "-m", "lsf_ros.animator_node", "--ros-args", "-r", f"__ns:={ns}",
           "-p", f"rate:={float(rate)}", "-p", "diagnostics_period:=0.5"]
    for k, v in params.items():
        cmd += ["-p", f"{k}:={v}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ctx = Context()
    rclpy.init(args=[], context=ctx)
    executor = SingleThreadedExecutor(context=ctx)
    spin = None
    received: list[tuple[float, float]] = []   # (wall time received, frame stamp)
    diags: list = []
    try:
        node = rclpy.create_node("lsf_bench_latency", context=ctx)
        executor.add_node(node)
        node.create_subscription(JointState, f"{ns}/face/blendshapes",
                                 lambda m: received.append((time.time(), m.header.stamp.sec + m.header.stamp.nanosec
                                                            * 1e-9)),
                                 QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE))
        node.create_subscription(DiagnosticArray, "/diagnostics", diags.append, 10)
        pub = node.create_publisher(Int16MultiArray, f"{ns}/audio", 50)
        spin = BackgroundSpin(executor, "lsf-bench-latency")
        deadline = time.monotonic() + startup_timeout
        while pub.get_subscription_count() == 0 or node.count_publishers(f"{ns}/face/blendshapes") == 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the animator did not start:\n{proc.communicate(timeout=5)[0][-3000:]}")
            time.sleep(0.05)
        time.sleep(1.0)  # let the best-effort reader match too
        dur = chunk / sr
        t0 = time.time()
        for k in tqdm(range(int(np.ceil(len(audio) / chunk))), desc="publishing speech", unit="chunk",
                      disable=not sys.stderr.isatty()):
            time.sleep(max(0.0, t0 + (k + 1) * dur - time.time()))
            pub.publish(adapter.encode(audio[k * chunk:(k + 1) * chunk], 0.0))
        end = time.monotonic() + 3.0
        while time.monotonic() < end and len(received) < seconds * rate - 2:
            time.sleep(0.05)
        time.sleep(0.5)
        status = next((s for d in reversed(diags) for s in d.status if s.name.startswith(f"{ns}/animator")), None)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        if spin is not None:
            spin.stop()
        else:
            executor.shutdown()
        rclpy.try_shutdown(context=ctx)
    if not received:
        raise RuntimeError("no frames came back from the animator")
    recv = np.array([r[0] for r in received])
    stamps = np.array([r[1] for r in received])
    anchor = stamps[0]   # = t0 + transport delay: the animator anchors audio time 0 at the first chunk
    k = np.clip(np.floor((stamps - anchor) / dur + 1e-9), 0, None)
    from_chunk = 1000.0 * (recv - (t0 + (k + 1) * dur))
    from_audio = 1000.0 * (recv - (t0 + (stamps - anchor)))
    # steady state: without the stream's first 2 s (the model's context fills up: slower steps) and the frames
    # held back by the look-ahead at the end (sent flush_after seconds after the last chunk)
    steady = ((stamps - anchor) >= 2.0) & ((stamps - anchor) <= seconds - 0.5)
    diag = {v.key: v.value for v in status.values} if status is not None else {}
    return {
        "what": "animator node end-to-end latency over loopback: audio chunk published -> face frame received",
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "python": platform.python_version()},
        "model": params.get("model", "realtime (default)"), "device": diag.get("device", "?"),
        "audio": str(audio_path), "seconds": seconds, "chunk_samples": chunk, "chunk_ms": 1000.0 * dur,
        "rate_hz": rate, "frames": int(len(received)), "expected_frames": int(round(seconds * rate)),
        "latency_from_chunk_ms": _pct(from_chunk), "latency_from_audio_ms": _pct(from_audio),
        "steady_latency_from_chunk_ms": _pct(from_chunk[steady]) if steady.any() else None,
        "algorithmic_latency_ms": float(diag.get("algorithmic_latency_ms", "nan")),
        "rtf": float(diag.get("rtf", "nan")), "dropped_chunks": int(diag.get("dropped_chunks", "0")),
    }


def main(argv: list[str] | None = None) -> int:
    from lsf_core import DEMO_CLIP

    p = argparse.ArgumentParser(prog="lsf-ros bench-latency", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--audio", type=Path, default=DEMO_CLIP, help="speech to publish (looped to --seconds)")
    p.add_argument("--seconds", type=float, default=15.0, help="seconds of audio to stream")
    p.add_argument("--chunk", type=int, default=1024, help="samples per audio message at 16 kHz")
    p.add_argument("--rate", type=float, default=30.0, help="output frames per second")
    p.add_argument("--model", default="", help="model preset or .safetensors (default: the node's default)")
    p.add_argument("--json", type=Path, default=Path("bench_latency.json"), help="where to write the results")
    a = p.parse_args(argv)
    params = {"model": a.model} if a.model else {}
    try:
        result = measure(a.audio, a.seconds, a.chunk, a.rate, params)
    except (RuntimeError, OSError, ValueError) as err:
        print(f"lsf-ros bench-latency: {err}", file=sys.stderr)
        return 1
    a.json.write_text(json.dumps(result, indent=2))
    c, au = result["latency_from_chunk_ms"], result["latency_from_audio_ms"]
    print(f"{result['frames']}/{result['expected_frames']} frames, RTF {result['rtf']:.3f}, device {result['device']}")
    print(f"latency chunk published -> frame received: p50 {c['p50']:.1f} ms, p95 {c['p95']:.1f} ms, "
          f"max {c['max']:.1f} ms")
    print(f"latency audio time -> frame received:      p50 {au['p50']:.1f} ms, p95 {au['p95']:.1f} ms")
    if result["steady_latency_from_chunk_ms"]:
        st = result["steady_latency_from_chunk_ms"]
        print(f"steady state (after 2 s, before the end):  p50 {st['p50']:.1f} ms, p95 {st['p95']:.1f} ms, "
              f"max {st['max']:.1f} ms (chunk published -> frame received)")
    print(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
