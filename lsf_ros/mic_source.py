"""``mic_source`` node: a sound card input (sounddevice / PortAudio) onto ``audio``.

Parameters: ``device`` (index or part of the name; empty = the system default input),
``sample_rate``, ``channels``, ``chunk`` (samples per message), ``audio_type`` (default
std_msgs/Int16MultiArray). Without a usable input device it stops at once with an error that lists
the devices PortAudio sees.
"""
from __future__ import annotations

import sys
from typing import Any

import numpy as np
from rclpy.node import Node

from lsf_ros.audio_adapters import info_message, source_parameters
from lsf_ros.file_source import INFO_QOS, SOURCE_QOS
from lsf_ros.node_main import start_and_spin
from lsf_ros.sound_devices import DeviceError, close_stream, import_sounddevice, resolve_device


class MicError(DeviceError):
    """No usable input device; the message lists the devices found."""


def resolve_input(sd: Any, device: str) -> int | str | None:
    """``device`` parameter -> sounddevice device (None = default input); MicError when unusable."""
    return resolve_device(sd, device, "input", "mic_source",
                          "Set the device parameter to one with inputs, or use audio_source:=file.", MicError)


class MicSource(Node):
    def __init__(self, node_name: str = "mic_source", start: bool = True, **kwargs: Any):
        super().__init__(node_name, **kwargs)
        self.adapter = source_parameters(self)
        self.declare_parameter("device", "")
        self.declare_parameter("chunk", 1024)
        self.device = str(self.get_parameter("device").value)
        self.chunk = int(self.get_parameter("chunk").value)
        if not 16 <= self.chunk <= 1 << 16:
            raise ValueError(f"parameter chunk must be within 16..65536 samples; got {self.chunk}")
        self.pub = self.create_publisher(self.adapter.msg_class(), "audio", SOURCE_QOS)
        info = info_message(self.adapter, self.adapter.channels)
        if info is not None:
            self.create_publisher(type(info), "audio_info", INFO_QOS).publish(info)
        self.published = 0
        self.overflows = 0
        self.stream = None
        if start:
            self.start()

    def start(self) -> None:
        sd = import_sounddevice("mic_source", MicError)
        device = resolve_input(sd, self.device)
        self.stream = sd.InputStream(device=device, samplerate=self.adapter.sample_rate,
                                     channels=self.adapter.channels, dtype="int16", blocksize=self.chunk,
                                     callback=self.on_audio)
        self.stream.start()
        self.get_logger().info(f"capturing {self.adapter.sample_rate} Hz x {self.adapter.channels} from "
                               f"{device if device is not None else 'the default input'} onto "
                               f"{self.resolve_topic_name('audio')} as {self.adapter.type_name}")

    def on_audio(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        """sounddevice callback: one block of int16 (frames, channels) -> one message."""
        if status:
            self.overflows += 1
            self.get_logger().warning(f"audio input: {status}", throttle_duration_sec=5.0)
        stamp = self.get_clock().now().nanoseconds * 1e-9 - frames / self.adapter.sample_rate
        self.pub.publish(self.adapter.encode(np.array(indata[:frames], copy=True), stamp))
        self.published += 1

    def close(self) -> None:
        self.stream = close_stream(self.stream)


def main(args: list[str] | None = None) -> int:
    return start_and_spin(MicSource, (MicError, ValueError), args)


if __name__ == "__main__":
    sys.exit(main())
