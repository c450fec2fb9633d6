"""``tts_source`` node: text on ``say`` (std_msgs/String) -> speech on ``audio`` in real time; ``speaking``.

Speaks with the offline engines the project uses (lsf_core.data.tts: espeak-ng, flite, festival). Parameters:
``engine``, ``voice``, ``rate`` (speaking-rate factor), ``pitch`` (espeak-ng, 0..99) -- all changeable at run
time --, ``max_chars``, ``chunk`` (samples per message) and the audio parameters every source has
(``audio_type`` -- any type of lsf_ros.audio_adapters --, ``sample_rate``, ``channels``). Texts are spoken in
order, one after the other, paced like a microphone (each chunk published when it would have been captured).
Between texts the source publishes silence on the same timeline (``silence_between``, default true), as a
microphone does: the animator sees one unbroken stream and keeps the face alive (blinks, gaze, idle motion)
while the robot is quiet; with ``silence_between:=false`` only speech is published and the face stops between
utterances.
``speaking`` (std_msgs/Bool, transient local) is true from the first chunk of an utterance to its last, for
dialogue managers; the sound itself leaves a synchronised ``speaker`` its delay later.

Bad requests never stop the node: an empty or too long text, an unknown voice or a missing engine is
logged as an error naming the parameter or the text, and the node goes on with the next request.
"""
from __future__ import annotations

import queue
import sys
import threading
import time
from typing import Any

import numpy as np
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from std_msgs.msg import Bool, String

from lsf_core.audio import MODEL_RATE, resample
from lsf_core.data.tts import ENGINE_PROGRAMS, SynthesisError, Voice, check_voice, synthesize
from lsf_ros.audio_adapters import info_message, source_parameters
from lsf_ros.file_source import INFO_QOS, SOURCE_QOS, publish_paced
from lsf_ros.node_main import start_and_spin
from lsf_ros.params import Param, declare, invalid_reason

PARAMS: dict[str, Param] = {
    "engine": Param("espeak", "TTS engine", choices=tuple(ENGINE_PROGRAMS), read_only=False),
    "voice": Param("en-us", "engine voice: espeak-ng language[+variant] (en-us+f3), flite (slt, rms, awb, kal16), "
                   "festival (kal_diphone, cmu_us_slt_arctic_hts)", read_only=False),
    "rate": Param(1.0, "speaking-rate factor (1 = the engine's normal rate)", (0.3, 3.0), read_only=False),
    "pitch": Param(50, "pitch 0..99 (espeak-ng only)", (0, 99), read_only=False),
    "max_chars": Param(2000, "longest text accepted on say (longer ones are refused with an error)", (1, 100000)),
    "chunk": Param(1024, "samples per audio message", (16, 1 << 20)),
    "max_pending": Param(20, "texts waiting to be spoken at most; more are refused with an error", (1, 1000)),
    "silence_between": Param(True, "publish silence between utterances on one continuous timeline, as a microphone "
                             "does, so the animator keeps the face alive (blinks, gaze, idle motion) while the robot "
                             "is quiet; false = publish speech only (the face then stops between utterances)"),
}
SPEAKING_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def text_problem(text: str, max_chars: int) -> str | None:
    """Why ``text`` cannot be spoken (empty, too long), or None."""
    if not text.strip():
        return "say: the text is empty (nothing to speak)"
    if len(text) > max_chars:
        return (f"say: the text has {len(text)} characters, more than max_chars={max_chars}; split it into "
                f"sentences or raise max_chars")
    return None


class TtsSource(Node):
    def __init__(self, node_name: str = "tts_source", **kwargs: Any):
        super().__init__(node_name, **kwargs)
        self.adapter = source_parameters(self)
        self.p = declare(self, PARAMS)
        self.pub = self.create_publisher(self.adapter.msg_class(), "audio", SOURCE_QOS)
        info = info_message(self.adapter, self.adapter.channels)
        if info is not None:
            self.create_publisher(type(info), "audio_info", INFO_QOS).publish(info)
        self.pub_speaking = self.create_publisher(Bool, "speaking", SPEAKING_QOS)
        self.pub_speaking.publish(Bool(data=False))
        self.counts = {"spoken": 0, "errors": 0, "chunks": 0}
        self.voice_error: str | None = None
        self._lock = threading.Lock()
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._stop = threading.Event()
        self._pending = 0   # texts accepted and not yet spoken (or failed)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._check_voice()
        self.create_subscription(String, "say", lambda msg: self.say(msg.data), 10)
        self._thread = threading.Thread(target=self._work, name="tts-source", daemon=True)
        self._thread.start()
        self.get_logger().info(f"speaking texts from {self.resolve_topic_name('say')} with {self._voice().source} "
                               f"onto {self.resolve_topic_name('audio')} ({self.adapter.type_name}, "
                               f"{self.adapter.sample_rate} Hz)")

    def _voice(self) -> Voice:
        with self._lock:
            return Voice(self.p["engine"], self.p["voice"], float(self.p["rate"]), int(self.p["pitch"]))

    def _check_voice(self) -> None:
        """Check the voice now (startup, parameter change): an error is logged and kept, not raised."""
        try:
            check_voice(self._voice())
            self.voice_error = None
        except SynthesisError as err:
            self.voice_error = f"parameters engine/voice: {err}"
            self.get_logger().error(f"{self.voice_error}; say requests fail until they are fixed")

    def _on_set_parameters(self, params: list) -> SetParametersResult:
        for prm in params:
            if prm.name in PARAMS:
                if PARAMS[prm.name].read_only:
                    return SetParametersResult(successful=False, reason=f"{prm.name} is read-only")
                reason = invalid_reason(prm.name, PARAMS[prm.name], prm.value)
                if reason:
                    return SetParametersResult(successful=False, reason=reason)
        with self._lock:
            for prm in params:
                if prm.name in PARAMS:
                    self.p[prm.name] = prm.value
        if any(prm.name in ("engine", "voice") for prm in params):
            threading.Thread(target=self._check_voice, daemon=True).start()
        return SetParametersResult(successful=True)

    def say(self, text: str) -> bool:
        """Queue ``text`` (what a message on ``say`` does); False, with the reason logged, when it is refused."""
        problem = text_problem(text, self.p["max_chars"])
        if problem is None and self._queue.qsize() >= self.p["max_pending"]:
            problem = f"say: {self._queue.qsize()} texts are already waiting (max_pending); {text[:40]!r} refused"
        if problem:
            self.counts["errors"] += 1
            self.get_logger().error(problem)
            return False
        with self._lock:
            self._pending += 1
        self._queue.put(text)
        return True

    def _work(self) -> None:
        silence = np.zeros((self.p["chunk"], self.adapter.channels), np.float32)
        self._restart_timeline()
        while not self._stop.is_set():
            try:
                text = self._queue.get_nowait() if self.p["silence_between"] else self._queue.get()
            except queue.Empty:   # quiet: silence on the same timeline, paced like a microphone
                self._emit(silence)
                continue
            if text is None:
                return
            try:
                self._speak(text)
            finally:
                with self._lock:
                    self._pending -= 1

    def _restart_timeline(self) -> None:
        """Audio from here on starts now: wall time for pacing, the node's clock for stamps."""
        self._wall0, self._stamp0, self._sent = time.monotonic(), self.get_clock().now().nanoseconds * 1e-9, 0

    def _emit(self, audio: np.ndarray) -> None:
        """Publish ``audio`` paced, right after what the timeline already holds (stamps on its sample clock); a
        stop cuts it short (the worker loop then ends)."""
        rate = self.adapter.sample_rate
        publish_paced(self._publish, audio, rate, self.p["chunk"], 1.0, self._stop,
                      self._stamp0 + self._sent / rate, start_wall=self._wall0 + self._sent / rate)
        self._sent += len(audio)

    def _speak(self, text: str) -> None:
        voice = self._voice()
        try:
            if self.voice_error:
                raise SynthesisError(self.voice_error)
            audio = synthesize(voice, text)
        except SynthesisError as err:
            self.counts["errors"] += 1
            self.get_logger().error(f"say {text[:60]!r}: {err}")
            return
        rate = self.adapter.sample_rate
        audio = resample(audio, MODEL_RATE, rate)
        audio = np.repeat(audio[:, None], self.adapter.channels, axis=1)
        self.get_logger().info(f"saying {text[:60]!r} ({len(audio) / rate:.2f} s, {voice.source})")
        if not self.p["silence_between"]:
            self._restart_timeline()   # with silence between, speech continues the timeline (after synthesis
                                       # time: the pieces due meanwhile go out at once, stamped where they belong)
        self.pub_speaking.publish(Bool(data=True))
        try:
            self._emit(audio)
        finally:
            self.pub_speaking.publish(Bool(data=False))
        self.counts["spoken"] += 1

    def _publish(self, piece: np.ndarray, stamp: float) -> None:
        self.pub.publish(self.adapter.encode(piece, stamp))
        self.counts["chunks"] += 1

    def idle(self) -> bool:
        """True when no text is waiting or being spoken."""
        with self._lock:
            return self._pending == 0

    def close(self) -> None:
        self._stop.set()
        self._queue.put(None)
        self._thread.join(timeout=5.0)


def main(args: list[str] | None = None) -> int:
    return start_and_spin(TtsSource, (ValueError,), args, prefix="tts_source: ")


if __name__ == "__main__":
    sys.exit(main())
