"""``lsf-ros bench-sync``: lip sync measured end to end on a virtual sound card: when each sound leaves the
card vs when its face frame is published, and the delay the speaker adds.

For each source (``file``: speech from a file, ``tts``: sentences sent to ``say``) and chunk size it starts a
private PulseAudio server with a null sink (lsf_core.evaluation.sound_server) and the graph as separate
processes, as ``ros2 launch`` would: source -> ``animator`` -> ``speaker`` (delay from the animator's latency).
This process listens to the audio topic (each chunk's samples, audio time -- stamped as the animator and
speaker stamp it -- and arrival time), to ``face/blendshapes`` (each frame's stamp and DDS publish time) and
records the sink's monitor with ``parec`` (each sample timed on the system clock, independently of the
speaker). Every 100 ms window of speech in the audio is found in the recording (normalised
cross-correlation, between its audio time and 3.5 s later), which gives when it was played; its face frame
is the one stamped with the window's audio time. Per window: offset = played - frame published; added
delay = played - audio arrived; and the two sides of the offset: the face's latency (frame published - its
stamp) and the sound's (played - audio time).
Targets (ITU-R BT.1359, ITU-T G.114): p95 |offset| <= 45 ms, added delay p50 <= 150 ms, judged on all
windows; figures without the first seconds are reported beside them.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from lsf_core.audio import load_audio
from lsf_ros.domain import default_ros_env
from lsf_ros.spinning import BackgroundSpin

SR = 16000
WINDOW = 1600            # samples per matched window (100 ms)
TARGET_OFFSET_P95_MS = 45.0
TARGET_DELAY_P50_MS = 150.0
STEADY_AFTER_S = 3.0     # "steady" figures leave out the first seconds (the delay settles on the face's latency)
SENTENCES = ("Hello there, I am a talking robot.", "My lips move with my voice.",
             "Please open the big blue box for me.", "What a lovely day it is today.",
             "Seven quick foxes jumped over the fence.", "Thank you, and see you soon.")


def _pct(x: np.ndarray) -> dict:
    x = x[np.isfinite(x)]
    if x.size == 0:
        return {"p50": None, "p95": None, "max": None, "n": 0}
    return {"p50": round(float(np.percentile(x, 50)), 1), "p95": round(float(np.percentile(x, 95)), 1),
            "max": round(float(x.max()), 1), "n": int(x.size)}


def _timeline(chunks: list[tuple[float, np.ndarray, float]]) -> tuple[float, np.ndarray, np.ndarray]:
    """Chunks (audio time, samples, arrival) -> (t0, samples on the audio-time grid, arrival per sample)."""
    t0 = chunks[0][0]
    end = max(int(round((t - t0) * SR)) + len(x) for t, x, _ in chunks)
    audio, arrival = np.zeros(end, np.float32), np.full(end, np.nan)
    for t, x, a in chunks:
        i = int(round((t - t0) * SR))
        audio[i:i + len(x)], arrival[i:i + len(x)] = x, a
    return t0, audio, arrival


def match_windows(audio: np.ndarray, t0: float, rec: np.ndarray, rec_t: np.ndarray, max_delay: float = 3.5,
                  narrow: float = 0.3, min_rms: float = 0.02, min_ncc: float = 0.85) -> list[tuple[int, int]]:
    """(index in ``audio``, index in ``rec``) of every speech window of ``audio`` (audio time ``t0`` + i / SR)
    found in the recording (sample times ``rec_t``), by normalised cross-correlation: within ``narrow`` s of the
    last window's delay, else anywhere from its audio time to ``max_delay`` after it (no sound plays before its
    audio time, none later than the speaker's largest delay; a looped clip cannot match the wrong loop)."""
    from scipy.signal import correlate

    def find(w: np.ndarray, t_lo: float, t_hi: float) -> int | None:
        lo, hi = int(np.searchsorted(rec_t, t_lo)), int(np.searchsorted(rec_t, t_hi)) + WINDOW
        r = rec[lo:hi]
        if len(r) < WINDOW + 1:
            return None
        c = correlate(r, w, mode="valid", method="fft")
        energy = np.convolve(r ** 2, np.ones(WINDOW), mode="valid")
        ncc = c / np.sqrt(np.maximum(energy, 1e-12) * float(np.sum(w ** 2)))
        k = int(np.argmax(ncc))
        return lo + k if ncc[k] >= min_ncc else None

    out, lag = [], None
    for i in range(0, len(audio) - WINDOW, WINDOW):
        w = audio[i:i + WINDOW]
        if np.sqrt(np.mean(w ** 2)) < min_rms:
            continue
        a = t0 + i / SR
        j = find(w, a + lag - narrow, a + lag + narrow) if lag is not None else None
        j = find(w, a - 0.05, a + max_delay) if j is None else j
        if j is not None:
            out.append((i, j))
            lag = rec_t[j] - a
    return out


class _Listener:
    """Audio chunks (stamped as the animator stamps them), face frames (stamp, publish time), diagnostics."""

    def __init__(self, ctx, ns: str):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import JointState
        from std_msgs.msg import Bool, Int16MultiArray, String

        from lsf_core.runtime.clock import ChunkClock
        from lsf_ros.tts_source import SPEAKING_QOS

        self.node = rclpy.create_node("lsf_bench_sync", context=ctx)
        self.chunks: list[tuple[float, np.ndarray, float]] = []
        self.frames: list[tuple[float, float]] = []
        self.diags: dict[str, dict] = {}
        self.speaking = False
        self._clock = ChunkClock(0.5)
        self._int16 = Int16MultiArray
        from rclpy.serialization import deserialize_message

        def on_audio(raw, info):
            arrival = time.time()
            msg = deserialize_message(raw, Int16MultiArray)
            x = np.asarray(msg.data, np.int16).astype(np.float32) / 32768.0
            sent = info.get("source_timestamp", 0) * 1e-9
            self.chunks.append((self._clock.stamp(len(x), SR, sent if sent > 0 else arrival), x, arrival))

        def on_frame(raw, info):
            msg = deserialize_message(raw, JointState)
            self.frames.append((msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9,
                                info.get("source_timestamp", 0) * 1e-9 or time.time()))

        def on_diag(msg):
            for s in msg.status:
                if s.name.startswith(ns):
                    self.diags[s.name.rsplit(": ", 1)[-1]] = {kv.key: kv.value for kv in s.values}

        self.node.create_subscription(Int16MultiArray, f"{ns}/audio", on_audio,
                                      QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE), raw=True)
        self.node.create_subscription(JointState, f"{ns}/face/blendshapes", on_frame,
                                      QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE), raw=True)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 50)
        self.node.create_subscription(Bool, f"{ns}/speaking", lambda m: setattr(self, "speaking", m.data),
                                      SPEAKING_QOS)
        self.say = self.node.create_publisher(String, f"{ns}/say", 10)
        self.string = String


def measure(source: str, chunk: int, seconds: float, audio_path: Path, model: str = "",
            startup_timeout: float = 180.0) -> dict:
    """One run: ``source`` (file | tts) in ``chunk``-sample messages for about ``seconds`` s of speech."""
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor

    from lsf_core.evaluation.sound_server import NullSinkServer

    default_ros_env()
    ns = f"/lsf_sync_{os.getpid()}_{source}_{chunk}"
    tmp = Path(tempfile.mkdtemp(prefix="lsf_bench_sync_"))
    procs: list[subprocess.Popen] = []
    ctx = Context()
    with NullSinkServer(rate=SR) as server:
        env = {**os.environ, **server.env(), "PYTHONUNBUFFERED": "1"}
        rclpy.init(args=[], context=ctx)
        executor = SingleThreadedExecutor(context=ctx)
        spin = None
        log = open(tmp / "nodes.log", "w")  # noqa: SIM115 - closed in finally
        try:
            listener = _Listener(ctx, ns)
            executor.add_node(listener.node)
            spin = BackgroundSpin(executor, "lsf-bench-sync")
            recording = server.record()

            def start(module: str, *params: str) -> None:
                cmd = [sys.executable, "-m", module, "--ros-args", "-r", f"__ns:={ns}"]
                for p in params:
                    cmd += ["-p", p]
                procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT))

            start("lsf_ros.animator_node", "diagnostics_period:=0.5", "publish_delay:=-1.0",
                  *([f"model:={model}"] if model else []))
            start("lsf_ros.speaker_node", "diagnostics_period:=0.5")
            deadline = time.monotonic() + startup_timeout
            while (listener.node.count_publishers(f"{ns}/face/blendshapes") == 0
                   or listener.node.count_subscribers(f"{ns}/audio") < 3):   # animator, speaker, us
                if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
                    raise RuntimeError(f"the graph did not start; its log: {(tmp / 'nodes.log').read_text()[-3000:]}")
                time.sleep(0.1)
            if source == "file":
                speech = load_audio(audio_path, SR)
                clip = tmp / "speech.wav"
                import soundfile as sf

                sf.write(str(clip), np.tile(speech, int(np.ceil(seconds * SR / len(speech))))[:int(seconds * SR)], SR)
                start("lsf_ros.file_source", f"file:={clip}", f"chunk:={chunk}")
                deadline = time.monotonic() + seconds + 30
                while time.monotonic() < deadline and procs[-1].poll() is None:
                    time.sleep(0.1)
            else:
                start("lsf_ros.tts_source", f"chunk:={chunk}")
                while listener.node.count_subscribers(f"{ns}/say") == 0:
                    if procs[-1].poll() is not None:
                        raise RuntimeError(f"tts_source did not start: {(tmp / 'nodes.log').read_text()[-2000:]}")
                    time.sleep(0.1)
                time.sleep(1.0)
                k, t_end = 0, time.monotonic() + seconds
                while time.monotonic() < t_end:
                    listener.say.publish(listener.string(data=SENTENCES[k % len(SENTENCES)]))
                    k += 1
                    t0 = time.monotonic()
                    while not listener.speaking and time.monotonic() - t0 < 10:
                        time.sleep(0.02)
                    while listener.speaking and time.monotonic() - t0 < 30:
                        time.sleep(0.02)
                    time.sleep(0.3)
            time.sleep(max(3.0, float(listener.diags.get("speaker", {}).get("delay_ms", "0")) / 1000 + 1.5))
            rec, rec_t = recording.stop()
            diags = dict(listener.diags)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGINT)
            for p in procs:
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            log.close()
            shutil.rmtree(tmp, ignore_errors=True)
            if spin is not None:
                spin.stop()
            else:
                executor.shutdown()
            rclpy.try_shutdown(context=ctx)
    return analyse(source, chunk, listener.chunks, listener.frames, rec, rec_t, diags)


def measure_speaker(chunk: int, seconds: float, delay: float = 0.2) -> dict:
    """The speaker alone, with a fixed ``delay``: a click train published in real time (unstamped Int16, as a
    microphone would); each click must leave the card at its audio time + ``delay``. What the speaker adds to
    the offset, without the animator's latency spread."""
    import rclpy
    from rclpy.context import Context
    from std_msgs.msg import Int16MultiArray

    from lsf_core.evaluation.sound_server import NullSinkServer

    default_ros_env()
    ns = f"/lsf_sync_{os.getpid()}_clicks_{chunk}"
    x = (np.random.default_rng(0).standard_normal(int(seconds * SR)) * 300).astype(np.int16)
    at = np.arange(int(0.5 * SR), len(x) - 400, int(0.237 * SR))
    for i in at:
        x[i:i + 32] = 29000
    ctx = Context()
    with NullSinkServer(rate=SR) as server:
        recording = server.record()
        proc = subprocess.Popen([sys.executable, "-m", "lsf_ros.speaker_node", "--ros-args", "-r", f"__ns:={ns}",
                                 "-p", f"delay:={delay}"], env={**os.environ, **server.env()},
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        rclpy.init(args=[], context=ctx)
        try:
            node = rclpy.create_node("lsf_bench_clicks", context=ctx)
            pub = node.create_publisher(Int16MultiArray, f"{ns}/audio", 20)
            deadline = time.monotonic() + 60
            while pub.get_subscription_count() == 0:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the speaker did not start: {proc.communicate(timeout=5)[0][-2000:]}")
                time.sleep(0.05)
            time.sleep(1.0)
            first, start = None, time.time()
            for k in range(len(x) // chunk):
                time.sleep(max(0.0, start + (k + 1) * chunk / SR - time.time()))
                first = first or time.time()
                pub.publish(Int16MultiArray(data=x[k * chunk:(k + 1) * chunk]))
            time.sleep(delay + 1.0)
        finally:
            rec, rec_t = recording.stop()
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
            rclpy.try_shutdown(context=ctx)
    hot = np.abs(rec) > 0.45
    on = np.flatnonzero(hot[1:] & ~hot[:-1]) + 1
    played = rec_t[on[np.r_[True, np.diff(on) > 400]]] if on.size else np.zeros(0)
    want = first - chunk / SR + at[at < len(x) // chunk * chunk] / SR + delay
    err = np.array([1000 * (played[np.argmin(np.abs(played - w))] - w) for w in want]) if played.size else want
    heard = np.abs(err) <= 100.0
    return {"source": "clicks (speaker alone, fixed delay)", "chunk_samples": chunk, "chunk_ms": 1000.0 * chunk / SR,
            "delay_ms": 1000.0 * delay, "clicks": int(len(want)), "clicks_played": int(heard.sum()),
            "timing_error_ms": _pct(err[heard]), "abs_timing_error_ms": _pct(np.abs(err[heard])),
            "load_average": round(os.getloadavg()[0], 1) if hasattr(os, "getloadavg") else None}


def analyse(source: str, chunk: int, chunks: list, frames: list, rec: np.ndarray, rec_t: np.ndarray,
            diags: dict) -> dict:
    if not chunks or not frames or rec.size == 0:
        raise RuntimeError(f"nothing to measure: {len(chunks)} audio chunks, {len(frames)} face frames, "
                           f"{rec.size} recorded samples")
    t0, audio, arrival = _timeline(sorted(chunks, key=lambda c: c[0]))
    stamps = np.array([f[0] for f in frames])
    published = np.array([f[1] for f in frames])
    order = np.argsort(stamps)
    stamps, published = stamps[order], published[order]
    offsets, added, after, face, sound = [], [], [], [], []
    pairs = match_windows(audio, t0, rec, rec_t)
    for i, j in pairs:
        a = t0 + i / SR
        k = int(np.clip(np.searchsorted(stamps, a), 1, len(stamps) - 1))
        k = k if abs(stamps[k] - a) < abs(stamps[k - 1] - a) else k - 1
        if abs(stamps[k] - a) > 0.04:
            continue    # no face frame for this audio (lost, or the end of a stream)
        played = rec_t[j] + (stamps[k] - a)    # when the frame's own instant was played
        offsets.append(1000.0 * (played - published[k]))
        added.append(1000.0 * (rec_t[j] - arrival[i]))
        after.append(i / SR >= STEADY_AFTER_S)
        face.append(1000.0 * (published[k] - stamps[k]))
        sound.append(1000.0 * (rec_t[j] - a))
    offsets, added, after = np.array(offsets), np.array(added), np.array(after, bool)
    speech_windows = int(sum(np.sqrt(np.mean(audio[i:i + WINDOW] ** 2)) >= 0.02
                             for i in range(0, len(audio) - WINDOW, WINDOW)))
    off = _pct(np.abs(offsets))
    delay = _pct(added)
    spk, ani = diags.get("speaker", {}), diags.get("animator", {})
    return {
        "source": source, "chunk_samples": chunk, "chunk_ms": 1000.0 * chunk / SR,
        "audio_s": round(len(audio) / SR, 2), "frames": len(frames),
        "windows_matched": len(pairs), "windows_with_speech": speech_windows, "windows_measured": int(offsets.size),
        "abs_offset_ms": off, "offset_ms_signed": _pct(offsets), "added_delay_ms": delay,
        "face_latency_ms": _pct(np.array(face)), "sound_delay_ms": _pct(np.array(sound)),
        "steady_abs_offset_ms": _pct(np.abs(offsets[after])) if offsets.size else _pct(offsets),
        "steady_added_delay_ms": _pct(added[after]) if added.size else _pct(added),
        "load_average": round(os.getloadavg()[0], 1) if hasattr(os, "getloadavg") else None,
        "sound_minus_face_ms_p50": round(float(np.median(offsets)), 1) if offsets.size else None,
        "speaker": {k: spk.get(k) for k in ("delay_ms", "least_delay_ms", "delay_source", "late_s", "jumps",
                                             "slews", "underflows", "device_lead_ms")},
        "animator": {k: ani.get(k) for k in ("latency_ms_p50", "latency_ms_p95", "algorithmic_latency_ms", "rtf",
                                              "dropped_chunks")},
        "meets_offset_target": off["p95"] is not None and off["p95"] <= TARGET_OFFSET_P95_MS,
        "meets_delay_target": delay["p50"] is not None and delay["p50"] <= TARGET_DELAY_P50_MS,
    }


def main(argv: list[str] | None = None) -> int:
    from lsf_core import DEMO_CLIP
    from lsf_core.evaluation.sound_server import unavailable_reason

    p = argparse.ArgumentParser(prog="lsf-ros bench-sync", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--seconds", type=float, default=20.0, help="seconds of speech per run")
    p.add_argument("--sources", nargs="+", default=["clicks", "file", "tts"], choices=["clicks", "file", "tts"],
                   help="clicks: the speaker alone with a fixed delay; file, tts: the whole graph")
    p.add_argument("--chunks-ms", nargs="+", type=float, default=[20.0, 64.0, 100.0], help="audio message sizes")
    p.add_argument("--audio", type=Path, default=DEMO_CLIP, help="speech for the file source (looped)")
    p.add_argument("--model", default="", help="model preset or .safetensors (default: the node's default)")
    p.add_argument("--json", type=Path, default=Path("bench_sync.json"), help="where to write the results")
    a = p.parse_args(argv)
    reason = unavailable_reason()
    if reason:
        print(f"lsf-ros bench-sync: no virtual sound card: {reason}", file=sys.stderr)
        return 1
    runs, speaker_runs = [], []
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    for source in a.sources:
        for ms in a.chunks_ms:
            chunk = int(round(ms * SR / 1000))
            print(f"[bench-sync] {source} source, {ms:.0f} ms chunks, {a.seconds:.0f} s ...", flush=True)
            try:
                r = (measure_speaker(chunk, a.seconds) if source == "clicks"
                     else measure(source, chunk, a.seconds, a.audio, a.model))
            except (RuntimeError, OSError, ValueError) as err:
                print(f"lsf-ros bench-sync: {source}, {ms:.0f} ms: {err}", file=sys.stderr)
                return 1
            if source == "clicks":
                speaker_runs.append(r)
                e = r["abs_timing_error_ms"]
                print(f"  speaker alone: |played - (audio time + delay)| p50 {e['p50']} ms, p95 {e['p95']} ms; "
                      f"{r['clicks_played']}/{r['clicks']} clicks played", flush=True)
                continue
            runs.append(r)
            o, d = r["abs_offset_ms"], r["added_delay_ms"]
            print(f"  |offset| p50 {o['p50']} ms, p95 {o['p95']} ms ({'meets' if r['meets_offset_target'] else 'FAILS'}"
                  f" <= {TARGET_OFFSET_P95_MS:.0f}); added delay p50 {d['p50']} ms "
                  f"({'meets' if r['meets_delay_target'] else 'FAILS'} <= {TARGET_DELAY_P50_MS:.0f}); "
                  f"{r['windows_measured']}/{r['windows_with_speech']} windows; speaker delay "
                  f"{r['speaker']['delay_ms']} ms, late {r['speaker']['late_s']} s", flush=True)
    result = {"what": __doc__.split("\n\n")[0].replace("\n", " "),
              "targets": {"abs_offset_ms_p95": TARGET_OFFSET_P95_MS, "added_delay_ms_p50": TARGET_DELAY_P50_MS},
              "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                          "load_average_at_start": load},
              "seconds": a.seconds, "speaker_alone": speaker_runs, "runs": runs,
              "all_targets_met": bool(runs) and all(r["meets_offset_target"] and r["meets_delay_target"] for r in runs)}
    a.json.write_text(json.dumps(result, indent=2))
    print(f"wrote {a.json}; all targets met: {result['all_targets_met']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
