"""Audio message types -> (samples, sample rate, capture stamp), one adapter per input type.

There is no standard ROS audio message (REFERENCE.md §4), so the animator's input type is a
parameter. Each adapter knows its message class, how to decode it (``decode``), how to build one
(``encode``, used by the source nodes and the tests) and whether a separate info topic carries the
sample rate and channel count. Message packages are imported only when their adapter is asked for,
so a missing ``audio_common_msgs`` or ``foxglove_msgs`` is a clear error listing what is available.
"""
from __future__ import annotations

import importlib
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from lsf_core.audio import AudioError, decode_pcm

DEFAULT_AUDIO_TYPE = "std_msgs/Int16MultiArray"
DEFAULT_SAMPLE_RATE = 16000
DEFAULT_CHANNELS = 1

# mgonzs13 audio_common AudioInfo.format codes -> (AudioData field, numpy dtype)
MGONZS13_FORMATS: dict[int, tuple[str, str]] = {
    1: ("float32_data", "<f4"), 2: ("int32_data", "<i4"), 8: ("int16_data", "<i2"),
    16: ("int8_data", "i1"), 32: ("uint8_data", "u1"),
}


RAW_CODINGS = ("wave", "wav", "raw", "pcm")


class CompressedAudioError(AudioError):
    """An audio message while the AudioInfo says the stream is compressed (mp3): never animated as PCM."""


@dataclass
class AudioChunk:
    samples: np.ndarray        # (frames, channels), int or float dtype
    sample_rate: int
    stamp: float | None        # capture time (s) of samples[0], None when the message carries none


def stamp_to_sec(t: Any) -> float:
    return float(t.sec) + float(t.nanosec) * 1e-9


def sec_to_stamp(seconds: float, time_cls: Any) -> Any:
    ns = int(round(seconds * 1e9))
    return time_cls(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def follow(tracker: Any, info: dict, seconds: float, now: float) -> bool:
    """``SourceTracker.accept`` for a message of ``seconds`` of audio, from rclpy's MessageInfo (``raw`` subscriptions
    hand it over): the publisher's DDS writer GID and its publication sequence number, where the middleware gives
    them."""
    gid = info.get("publisher_gid")
    return tracker.accept(bytes(gid["data"]) if gid else None, info.get("publication_sequence_number"), seconds, now)


def _frames(flat: np.ndarray, channels: int, source: str) -> np.ndarray:
    if flat.size == 0:
        raise AudioError(f"{source}: message holds no samples")
    if flat.size % channels:
        raise AudioError(f"{source}: {flat.size} samples is not a multiple of channels={channels}")
    return flat.reshape(-1, channels)


def _bytes(data: Any) -> np.ndarray:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return np.frombuffer(data, np.uint8)
    return np.asarray(data, dtype=np.uint8)


def _as_int16(samples: np.ndarray) -> np.ndarray:
    a = np.asarray(samples)
    if a.dtype.kind == "f":
        return np.clip(np.round(a * 32767.0), -32768, 32767).astype(np.int16)
    return a.astype(np.int16)


def _as_float32(samples: np.ndarray) -> np.ndarray:
    a = np.asarray(samples)
    return a.astype(np.float32) / 32768.0 if a.dtype.kind in "iu" else a.astype(np.float32)


class AudioAdapter:
    """Base: ``type_name`` is what the ``audio_type`` parameter says; ``module``/``cls`` locate the class."""

    type_name = ""
    module = ""
    cls = ""
    info_cls = ""              # separate info message on the info topic ("" = none)
    needs_info = False         # rate and channels come only on the info topic (its messages carry neither)
    stamped = False

    def __init__(self, sample_rate: int = DEFAULT_SAMPLE_RATE, channels: int = DEFAULT_CHANNELS):
        self.sample_rate = int(sample_rate)
        self.channels = int(channels)
        self.info_received = False

    @classmethod
    def msg_class(cls) -> type:
        return getattr(importlib.import_module(cls.module), cls.cls)

    @classmethod
    def info_class(cls) -> type | None:
        return getattr(importlib.import_module(cls.module), cls.info_cls) if cls.info_cls else None

    @classmethod
    def available(cls) -> bool:
        try:
            cls.msg_class()
            cls.info_class()
        except (ImportError, AttributeError):
            return False
        return True

    def on_info(self, info: Any) -> None:
        raise NotImplementedError

    def decode(self, msg: Any) -> AudioChunk:
        raise NotImplementedError

    def encode(self, samples: np.ndarray, stamp: float) -> Any:
        """(frames, channels) or (frames,) int16/float samples -> one message of this type."""
        raise NotImplementedError


class _StdMultiArray(AudioAdapter):
    module = "std_msgs.msg"
    dtype = "<i2"

    def decode(self, msg: Any) -> AudioChunk:
        flat = np.asarray(msg.data, dtype=self.dtype)
        return AudioChunk(_frames(flat, self.channels, self.type_name), self.sample_rate, None)


class Int16MultiArrayAdapter(_StdMultiArray):
    type_name = "std_msgs/Int16MultiArray"
    cls = "Int16MultiArray"

    def encode(self, samples: np.ndarray, stamp: float) -> Any:
        return self.msg_class()(data=_as_int16(samples).ravel())


class Float32MultiArrayAdapter(_StdMultiArray):
    type_name = "std_msgs/Float32MultiArray"
    cls = "Float32MultiArray"
    dtype = "<f4"

    def encode(self, samples: np.ndarray, stamp: float) -> Any:
        return self.msg_class()(data=_as_float32(samples).ravel())


class UInt8MultiArrayAdapter(_StdMultiArray):
    """std_msgs/UInt8MultiArray whose bytes are interleaved S16LE PCM."""

    type_name = "std_msgs/UInt8MultiArray"
    cls = "UInt8MultiArray"

    def decode(self, msg: Any) -> AudioChunk:
        raw = _bytes(msg.data)
        if raw.size == 0:
            raise AudioError(f"{self.type_name}: message holds no samples")
        return AudioChunk(decode_pcm(raw, "S16LE", self.channels, self.type_name), self.sample_rate, None)

    def encode(self, samples: np.ndarray, stamp: float) -> Any:
        return self.msg_class()(data=_as_int16(samples).astype("<i2").tobytes())


class _RosDriversAudio(AudioAdapter):
    """ros-drivers audio_common_msgs: AudioData{uint8[] data} + AudioInfo on the info topic."""

    module = "audio_common_msgs.msg"
    info_cls = "AudioInfo"
    needs_info = True
    sample_format = "S16LE"
    compressed = ""            # the AudioInfo's coding_format while it is not raw PCM

    @classmethod
    def available(cls) -> bool:
        return super().available() and hasattr(cls.info_class()(), "sample_format")

    def on_info(self, info: Any) -> None:
        """Take rate, channels and sample format from an AudioInfo. A compressed coding (audio_capture's default
        is mp3) is an error, and every data message is rejected until an AudioInfo says raw PCM again."""
        coding = str(info.coding_format or "wave")
        if coding.lower() not in RAW_CODINGS:
            self.compressed, self.info_received = coding, True
            raise AudioError(f"coding_format {coding!r} is compressed: its audio messages are rejected, not "
                             "animated; publish raw PCM (audio_capture: format:=wave)")
        rate, channels = int(info.sample_rate), int(info.channels)
        if rate <= 0 or channels <= 0:
            raise AudioError(f"AudioInfo says sample_rate={rate}, channels={channels}; both must be positive")
        self.compressed, self.info_received = "", True
        self.sample_rate, self.channels = rate, channels
        self.sample_format = str(info.sample_format or "S16LE").upper()

    def _decode_data(self, data: Any, stamp: float | None) -> AudioChunk:
        if self.compressed:
            raise CompressedAudioError(f"{self.type_name}: the stream is {self.compressed} (AudioInfo "
                                       "coding_format), not raw PCM; message rejected")
        samples = decode_pcm(_bytes(data), self.sample_format, self.channels,
                             self.type_name)
        if samples.size == 0:
            raise AudioError(f"{self.type_name}: message holds no samples")
        return AudioChunk(samples, self.sample_rate, stamp)

    def _pcm(self, samples: np.ndarray) -> bytes:
        return _as_int16(samples).astype("<i2").tobytes()


class AudioDataAdapter(_RosDriversAudio):
    type_name = "audio_common_msgs/AudioData"
    cls = "AudioData"

    def decode(self, msg: Any) -> AudioChunk:
        return self._decode_data(msg.data, None)

    def encode(self, samples: np.ndarray, stamp: float) -> Any:
        return self.msg_class()(data=self._pcm(samples))


class AudioDataStampedAdapter(_RosDriversAudio):
    type_name = "audio_common_msgs/AudioDataStamped"
    cls = "AudioDataStamped"
    stamped = True

    def decode(self, msg: Any) -> AudioChunk:
        return self._decode_data(msg.audio.data, stamp_to_sec(msg.header.stamp) or None)

    def encode(self, samples: np.ndarray, stamp: float) -> Any:
        msg = self.msg_class()()
        msg.header.stamp = sec_to_stamp(stamp, type(msg.header.stamp))
        msg.audio.data = self._pcm(samples)
        return msg


class _Mgonzs13Audio(AudioAdapter):
    """mgonzs13 audio_common_msgs: Audio{AudioData audio_data, AudioInfo info} with format codes."""

    module = "audio_common_msgs.msg"

    @classmethod
    def available(cls) -> bool:
        if not super().available():
            return False
        return hasattr(importlib.import_module(cls.module).AudioInfo(), "format")

    def _decode_audio(self, audio: Any, stamp: float | None) -> AudioChunk:
        info = audio.info
        if int(info.format) not in MGONZS13_FORMATS:
            raise AudioError(f"{self.type_name}: unknown AudioInfo.format {info.format}; "
                             f"known: {sorted(MGONZS13_FORMATS)}")
        field, dtype = MGONZS13_FORMATS[int(info.format)]
        flat = np.asarray(getattr(audio.audio_data, field), dtype=dtype)
        channels = int(info.channels) or self.channels
        rate = int(info.rate) or self.sample_rate
        return AudioChunk(_frames(flat, channels, self.type_name), rate, stamp)

    def _fill(self, audio: Any, samples: np.ndarray) -> None:
        s = _as_int16(samples)
        audio.audio_data.int16_data = s.ravel()
        audio.info.format = 8
        audio.info.channels = 1 if s.ndim == 1 else s.shape[1]
        audio.info.rate = self.sample_rate
        audio.info.chunk = s.shape[0]


class AudioMgonzs13Adapter(_Mgonzs13Audio):
    type_name = "audio_common_msgs/Audio"
    cls = "Audio"

    def decode(self, msg: Any) -> AudioChunk:
        return self._decode_audio(msg, None)

    def encode(self, samples: np.ndarray, stamp: float) -> Any:
        msg = self.msg_class()()
        self._fill(msg, samples)
        return msg


class AudioStampedAdapter(_Mgonzs13Audio):
    type_name = "audio_common_msgs/AudioStamped"
    cls = "AudioStamped"
    stamped = True

    def decode(self, msg: Any) -> AudioChunk:
        return self._decode_audio(msg.audio, stamp_to_sec(msg.header.stamp) or None)

    def encode(self, samples: np.ndarray, stamp: float) -> Any:
        msg = self.msg_class()()
        msg.header.stamp = sec_to_stamp(stamp, type(msg.header.stamp))
        self._fill(msg.audio, samples)
        return msg


class RawAudioAdapter(AudioAdapter):
    """foxglove_msgs/RawAudio{timestamp, data, format 'pcm-s16', sample_rate, number_of_channels}."""

    type_name = "foxglove_msgs/RawAudio"
    module = "foxglove_msgs.msg"
    cls = "RawAudio"
    stamped = True

    def decode(self, msg: Any) -> AudioChunk:
        fmt = str(msg.format).lower()
        if fmt not in ("pcm-s16", "pcm_s16le", "s16le"):
            raise AudioError(f"{self.type_name}: format {msg.format!r} is not supported; use 'pcm-s16'")
        channels = int(msg.number_of_channels) or self.channels
        samples = decode_pcm(_bytes(msg.data), "S16LE", channels, self.type_name)
        if samples.size == 0:
            raise AudioError(f"{self.type_name}: message holds no samples")
        return AudioChunk(samples, int(msg.sample_rate) or self.sample_rate,
                          stamp_to_sec(msg.timestamp) or None)

    def encode(self, samples: np.ndarray, stamp: float) -> Any:
        s = _as_int16(samples)
        msg = self.msg_class()()
        msg.timestamp = sec_to_stamp(stamp, type(msg.timestamp))
        msg.data = s.astype("<i2").tobytes()
        msg.format = "pcm-s16"
        msg.sample_rate = self.sample_rate
        msg.number_of_channels = 1 if s.ndim == 1 else s.shape[1]
        return msg


ADAPTERS: dict[str, type[AudioAdapter]] = {a.type_name: a for a in (
    Int16MultiArrayAdapter, Float32MultiArrayAdapter, UInt8MultiArrayAdapter,
    AudioDataAdapter, AudioDataStampedAdapter, AudioMgonzs13Adapter, AudioStampedAdapter,
    RawAudioAdapter)}


def available_types() -> list[str]:
    """Audio types whose message packages are importable here."""
    return [name for name, a in ADAPTERS.items() if a.available()]


def make_adapter(audio_type: str, sample_rate: int = DEFAULT_SAMPLE_RATE,
                 channels: int = DEFAULT_CHANNELS) -> AudioAdapter:
    """The adapter for ``audio_type``; a clear error when it is unknown or its package is missing."""
    cls = ADAPTERS.get(audio_type)
    if cls is None:
        raise ValueError(f"audio_type {audio_type!r} is unknown; available here: "
                         f"{', '.join(available_types())} (known: {', '.join(ADAPTERS)})")
    if not cls.available():
        raise ValueError(f"audio_type {audio_type!r} needs the {cls.module.split('.')[0]} package "
                         f"(the matching variant), which is not importable here; available: "
                         f"{', '.join(available_types())}")
    return cls(sample_rate, channels)


class HeldAudio:
    """Audio messages that arrived before the AudioInfo their type needs (rate and channels would be guesses):
    kept, at most ``limit`` (the oldest dropped and counted), until ``release`` hands them back in order."""

    def __init__(self, limit: int = 256):
        self.limit = limit
        self.items: deque = deque()
        self.dropped = 0

    def hold(self, item: Any) -> None:
        self.items.append(item)
        while len(self.items) > self.limit:
            self.items.popleft()
            self.dropped += 1

    def release(self) -> list:
        out = list(self.items)
        self.items.clear()
        return out


def waiting_for_info(adapter: AudioAdapter, wait: bool) -> bool:
    """True while ``adapter``'s messages must be held: its type gets rate and channels only from an AudioInfo,
    none has arrived, and the node waits for one (``wait_for_audio_info``)."""
    return wait and adapter.needs_info and not adapter.info_received


def subscribe_audio_info(node: Any, adapter: AudioAdapter, callback: Any, topic: str = "audio_info") -> list:
    """Subscribe ``callback`` to the info topic of ``adapter``'s type so that every publisher matches: a
    reliable transient-local subscription gets the AudioInfo latched before we started (audio_capture, our
    sources), a best-effort volatile one matches volatile publishers (older audio_capture releases), which a
    transient-local subscription never does. Returns the subscriptions (none for types without info)."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    cls = adapter.info_class()
    if cls is None:
        return []
    latched = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
    volatile = QoSProfile(depth=5, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.BEST_EFFORT,
                          durability=DurabilityPolicy.VOLATILE)
    return [node.create_subscription(cls, topic, callback, qos) for qos in (latched, volatile)]


def info_message(adapter: AudioAdapter, channels: int) -> Any | None:
    """The info-topic message describing what ``adapter.encode`` publishes (None for types without one)."""
    cls = adapter.info_class()
    if cls is None:
        return None
    return cls(channels=channels, sample_rate=adapter.sample_rate, sample_format="S16LE", bitrate=0,
               coding_format="wave")


def source_parameters(node: Any) -> AudioAdapter:
    """Declare the parameters every audio source shares (audio_type, sample_rate, channels, topic QoS)
    and return the adapter that encodes its messages."""
    node.declare_parameter("audio_type", DEFAULT_AUDIO_TYPE)
    node.declare_parameter("sample_rate", DEFAULT_SAMPLE_RATE)
    node.declare_parameter("channels", DEFAULT_CHANNELS)
    rate = int(node.get_parameter("sample_rate").value)
    channels = int(node.get_parameter("channels").value)
    if not 8000 <= rate <= 192000:
        raise ValueError(f"parameter sample_rate must be within 8000..192000 Hz; got {rate}")
    if not 1 <= channels <= 32:
        raise ValueError(f"parameter channels must be within 1..32; got {channels}")
    return make_adapter(str(node.get_parameter("audio_type").value), rate, channels)
