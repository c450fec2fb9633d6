"""``speaker`` node: plays the ``audio`` topic on a sound device, each sample when its face frame is published.

Thin by design: messages -> (samples, audio time) exactly as the animator stamps them (the message's stamp,
else the sample-count clock anchored at the DDS publish time, ``ChunkClock``); the animator's face frames on
``face/blendshapes`` (received minus stamp: its latency, as it is now) -> the delay; a sounddevice
``OutputStream`` whose callback asks ``lsf_core.runtime.playback.Playback`` for the samples that leave the
device at the callback's DAC time. Jitter buffer, sample-clock scheduling, drift, underruns and the delay
policy live there. Without a usable output device the node stops at once with an error listing the devices.
"""
from __future__ import annotations

import sys
import time
from collections import deque
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import JointState

from lsf_core.audio import AudioError, to_float
from lsf_core.runtime.clock import ChunkClock
from lsf_core.runtime.playback import Playback, PlaybackConfig
from lsf_core.runtime.sources import SourceTracker
from lsf_ros.audio_adapters import (
    ADAPTERS,
    DEFAULT_AUDIO_TYPE,
    follow,
    make_adapter,
    subscribe_audio_info,
    waiting_for_info,
)
from lsf_ros.node_main import start_and_spin
from lsf_ros.params import Param, declare
from lsf_ros.sound_devices import DeviceError, close_stream, import_sounddevice, resolve_device

FRAME_QOS = QoSProfile(depth=30, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)

PARAMS: dict[str, Param] = {
    "device": Param("", "output device: index or part of its name; empty = the system default output"),
    "sample_rate": Param(16000, "device sample rate; audio of other rates is resampled", (8000, 192000)),
    "channels": Param(1, "device channels (the audio is downmixed, then copied to each)", (1, 32)),
    "delay": Param(-1.0, "s from a sample's audio time to the device output; -1 = follow the animator's "
                   "latency, measured on its face frames (median of the last 3 s)", (-1.0, 3.0)),
    "initial_delay": Param(0.25, "s of delay until the animator reports its latency (delay = -1)", (0.0, 3.0)),
    "delay_offset": Param(0.0, "s added to the animator's latency (delay = -1)", (-1.0, 1.0)),
    "face_topic": Param("face/blendshapes", "the animator's frames whose latency sets the delay (delay = -1)"),
    "device_latency": Param(0.04, "s of output latency asked of PortAudio (smaller: less delay, more underrun "
                            "risk; the delay accounts for it)", (0.005, 1.0)),
    "block": Param(0.02, "s per device block", (0.002, 0.2)),
    "audio_type": Param(DEFAULT_AUDIO_TYPE, "message type on the audio topic", choices=tuple(ADAPTERS)),
    "audio_reliability": Param("best_effort", "QoS of the audio subscription (as the animator's)",
                               choices=("best_effort", "reliable")),
    "clock_resync": Param(0.5, "audio without stamps: as the animator's clock_resync (both must stamp alike)",
                          (0.05, 10.0)),
    "diagnostics_period": Param(1.0, "s between /diagnostics messages", (0.1, 60.0)),
}


class SpeakerNode(Node):
    def __init__(self, node_name: str = "speaker", start: bool = True, **kwargs: Any):
        super().__init__(node_name, **kwargs)
        self.p = declare(self, PARAMS)
        self.adapter = make_adapter(self.p["audio_type"], self.p["sample_rate"], self.p["channels"])
        self.playback = Playback(PlaybackConfig(
            sample_rate=self.p["sample_rate"], channels=self.p["channels"], delay=self.p["delay"],
            initial_delay=self.p["initial_delay"], delay_offset=self.p["delay_offset"]))
        self._chunk_clock = ChunkClock(self.p["clock_resync"])
        self.sources = SourceTracker()   # one publisher followed, as the animator does
        self._sim_time = bool(self.get_parameter("use_sim_time").value)
        self.counts = {"bad_messages": 0, "underflows": 0, "callback_errors": 0, "messages": 0}
        self._prev_late = self._prev_skipped = 0.0
        self._msg_class = self.adapter.msg_class()
        qos = QoSProfile(depth=50, history=HistoryPolicy.KEEP_LAST,
                         reliability=ReliabilityPolicy.BEST_EFFORT if self.p["audio_reliability"] == "best_effort"
                         else ReliabilityPolicy.RELIABLE)
        self.create_subscription(self._msg_class, "audio", self._on_audio, qos, raw=True)
        subscribe_audio_info(self, self.adapter, self._on_info)
        if self.p["delay"] < 0:
            self.create_subscription(JointState, self.p["face_topic"], self._on_frame, FRAME_QOS)
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(self.p["diagnostics_period"], self._publish_diagnostics)
        self.stream = None
        self._clock_offsets: deque[float] = deque(maxlen=250)   # ~5 s of callbacks
        self.device_name = "?"
        if start:
            self.start()

    def start(self) -> None:
        sd = import_sounddevice("speaker")
        device = resolve_device(sd, self.p["device"], "output", "speaker",
                                "Set the device parameter to one with outputs (speaker:=false runs without sound).")
        rate = self.p["sample_rate"]
        try:
            self.stream = sd.OutputStream(device=device, samplerate=rate, channels=self.p["channels"],
                                          dtype="float32", blocksize=max(1, round(self.p["block"] * rate)),
                                          latency=self.p["device_latency"], callback=self._on_device)
            self.stream.start()
        except (sd.PortAudioError, ValueError) as err:
            raise DeviceError(f"speaker: cannot play {rate} Hz x {self.p['channels']} on "
                              f"{device if device is not None else 'the default output'} ({err})") from err
        self.device_name = sd.query_devices(self.stream.device)["name"]
        delay = (f"following the latency of {self.resolve_topic_name(self.p['face_topic'])}" if self.p["delay"] < 0
                 else f"delay {self.p['delay']:.3f} s")
        self.get_logger().info(f"playing {self.resolve_topic_name('audio')} on {self.device_name!r} "
                               f"({rate} Hz, output latency {1000 * self.stream.latency:.0f} ms), {delay}")

    # ---- input ------------------------------------------------------------------------------------
    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def drained(self) -> bool:
        """Every sample received has left the sound device (``Playback.drained`` on this node's clock)."""
        return self.playback.drained(self._now())

    def _on_info(self, msg: Any) -> None:
        try:
            self.adapter.on_info(msg)
        except (AudioError, ValueError, TypeError) as err:
            self.get_logger().warning(f"audio_info: {err}", throttle_duration_sec=5.0)

    def _on_audio(self, raw: bytes, info: dict) -> None:
        arrival = self._now()
        if waiting_for_info(self.adapter, True):
            self.get_logger().warning(f"no AudioInfo on {self.resolve_topic_name('audio_info')} yet: audio not "
                                      "played until one gives its rate and channels", throttle_duration_sec=5.0)
            return
        try:
            chunk = self.adapter.decode(deserialize_message(raw, self._msg_class))
            samples = to_float(np.asarray(chunk.samples), "audio message")
            if not np.all(np.isfinite(samples)):
                raise AudioError("samples contain NaN or Inf")
        except Exception as err:  # noqa: BLE001 - whatever the bytes are, they are one bad message
            self.counts["bad_messages"] += 1
            self.get_logger().warning(f"audio message: {err} (ignored; {self.counts['bad_messages']} so far)",
                                      throttle_duration_sec=5.0)
            return
        if not follow(self.sources, info, samples.shape[0] / chunk.sample_rate, time.monotonic()):
            return
        if self.sources.new_source:
            self._chunk_clock.reset()
        if chunk.stamp is not None:
            stamp = chunk.stamp
        else:  # as the animator: the DDS publish time marks the end of the chunk's audio
            sent = info.get("source_timestamp", 0) * 1e-9 if not self._sim_time else 0.0
            stamp = self._chunk_clock.stamp(samples.shape[0], chunk.sample_rate, sent if sent > 0 else arrival)
        self.playback.push(samples, chunk.sample_rate, stamp, arrival)
        self.counts["messages"] += 1

    def _on_frame(self, msg: JointState) -> None:
        self.playback.observe_frame(msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9, self._now())

    # ---- output (PortAudio's thread) --------------------------------------------------------------
    def _on_device(self, outdata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        now = self._now()
        try:
            if status.output_underflow:
                self.counts["underflows"] += 1
            cur, dac = time_info.currentTime, time_info.outputBufferDacTime
            if cur > 0 and dac > 0:   # PortAudio's clock -> ours: the least (now - cur) is the one not delayed
                self._clock_offsets.append(now - cur)   # by waiting for the GIL before this line ran
                dac_time = dac + min(self._clock_offsets)
            else:
                dac_time = now + self.stream.latency
            outdata[:] = self.playback.render(frames, dac_time, now)
        except Exception:  # noqa: BLE001 - the device thread must never die: play silence, count it
            outdata.fill(0)
            self.counts["callback_errors"] += 1

    # ---- diagnostics ------------------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        st = self.playback.stats()
        values = {**st, "device": self.device_name, "messages": self.counts["messages"],
                  "bad_messages": self.counts["bad_messages"], "underflows": self.counts["underflows"],
                  "callback_errors": self.counts["callback_errors"], "timing_error_ms": self.playback.error_ms(),
                  **self.sources.counts}
        late_now, self._prev_late = st["late_s"] - self._prev_late, st["late_s"]
        skipped_now, self._prev_skipped = st["skipped_s"] - self._prev_skipped, st["skipped_s"]
        level, message = DiagnosticStatus.OK, "playing" if st["buffered_s"] > 0 else "waiting for audio"
        if late_now > 0:
            level, message = DiagnosticStatus.WARN, (f"{late_now:.2f} s of audio came after its play time "
                                                     "(dropped): the delay is too short")
        elif skipped_now > 0:
            level, message = DiagnosticStatus.WARN, (f"{skipped_now:.2f} s of audio skipped: the sound device stalled "
                                                     "(the process did not get the CPU in time)")
        elif st["delay_limited"]:
            level, message = DiagnosticStatus.WARN, (f"the sound lags the face: chunk size and device latency need "
                                                     f"{st['least_delay_ms']:.0f} ms, the face's latency is "
                                                     f"{st['wanted_delay_ms']:.0f} ms")
        if late_now > 0 or skipped_now > 0 or st["delay_limited"]:
            self.get_logger().warning(message, throttle_duration_sec=10.0)
        status = DiagnosticStatus(level=level, name=f"{self.get_fully_qualified_name()}: speaker", message=message,
                                  hardware_id=self.device_name,
                                  values=[KeyValue(key=k, value=f"{v:.3f}" if isinstance(v, float) else str(v))
                                          for k, v in values.items()])
        arr = DiagnosticArray(status=[status])
        arr.header.stamp = self.get_clock().now().to_msg()
        self.pub_diag.publish(arr)

    def close(self) -> None:
        self.stream = close_stream(self.stream)


def main(args: list[str] | None = None) -> int:
    return start_and_spin(SpeakerNode, (DeviceError, ValueError), args)


if __name__ == "__main__":
    sys.exit(main())
