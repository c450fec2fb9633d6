"""``file_source`` node: plays a wav/flac/ogg file onto ``audio`` in real time (or faster, or looped).

Parameters: ``file``; ``sample_rate``/``channels`` of what it publishes (the file is resampled and
downmixed to them; default 16 kHz mono, the animator's default); ``chunk`` (samples per message);
``rate_factor`` (1 = real time, 2 = twice as fast, 0 = as fast as possible); ``loop``;
``audio_type`` (default std_msgs/Int16MultiArray); ``wait_for_subscriber`` (s to wait for a
subscriber before playing, so discovery does not eat the first words). Stamped types carry the
capture time of each chunk's first sample.
"""
from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from lsf_core.audio import AudioError, load_audio
from lsf_ros.audio_adapters import info_message, source_parameters
from lsf_ros.node_main import spin_and_close

SOURCE_QOS = QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE)
INFO_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


def chunks(audio: np.ndarray, size: int) -> list[np.ndarray]:
    return [audio[i:i + size] for i in range(0, len(audio), size)]


def publish_paced(publish: Callable[[np.ndarray, float], None], audio: np.ndarray, rate: int, chunk: int,
                  rate_factor: float, stop: threading.Event, start_stamp: float,
                  start_wall: float | None = None) -> bool:
    """Publish ``audio`` in ``chunk``-sample pieces, each when it would have been fully captured (``rate_factor``
    1 = real time, 0 = at once), stamped ``start_stamp`` + its offset. The audio starts at ``start_wall``
    (time.monotonic(); default now: a caller continuing one timeline passes where it left off). False when
    ``stop`` cut it short."""
    start_wall = time.monotonic() if start_wall is None else start_wall
    offset = 0
    for piece in chunks(audio, chunk):
        end = offset + len(piece)
        if rate_factor > 0:
            wait = start_wall + end / rate / rate_factor - time.monotonic()
            if wait > 0 and stop.wait(wait):
                return False
        publish(piece, start_stamp + offset / rate)
        offset = end
    return True


class FileSource(Node):
    def __init__(self, node_name: str = "file_source", **kwargs: Any):
        super().__init__(node_name, **kwargs)
        self.adapter = source_parameters(self)
        self.declare_parameter("file", "")
        self.declare_parameter("chunk", 1024)
        self.declare_parameter("rate_factor", 1.0)
        self.declare_parameter("loop", False)
        self.declare_parameter("wait_for_subscriber", 5.0)
        path = str(self.get_parameter("file").value)
        self.chunk = int(self.get_parameter("chunk").value)
        self.rate_factor = float(self.get_parameter("rate_factor").value)
        self.loop = bool(self.get_parameter("loop").value)
        self.wait = float(self.get_parameter("wait_for_subscriber").value)
        if not path:
            raise ValueError("parameter file is empty: give the audio file to play (file:=speech.wav)")
        if not 16 <= self.chunk <= 1 << 20:
            raise ValueError(f"parameter chunk must be within 16..1048576 samples; got {self.chunk}")
        if not 0.0 <= self.rate_factor <= 100.0:
            raise ValueError(f"parameter rate_factor must be within 0..100 (0 = as fast as possible); "
                             f"got {self.rate_factor}")
        mono = load_audio(Path(path).expanduser(), self.adapter.sample_rate)
        self.audio = np.repeat(mono[:, None], self.adapter.channels, axis=1)
        self.duration = len(mono) / self.adapter.sample_rate
        self.pub = self.create_publisher(self.adapter.msg_class(), "audio", SOURCE_QOS)
        info = info_message(self.adapter, self.adapter.channels)
        if info is not None:
            self.create_publisher(type(info), "audio_info", INFO_QOS).publish(info)
        self.done = threading.Event()
        self.published = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._play, name="file-source", daemon=True)
        self._thread.start()
        self.get_logger().info(f"playing {path} ({self.duration:.2f} s) at {self.adapter.sample_rate} Hz as "
                               f"{self.adapter.type_name} on {self.resolve_topic_name('audio')}")

    def _play(self) -> None:
        deadline = time.monotonic() + self.wait
        try:
            while self.pub.get_subscription_count() == 0 and time.monotonic() < deadline and not self._stop.is_set():
                time.sleep(0.05)
            while not self._stop.is_set():
                start_stamp = self.get_clock().now().nanoseconds * 1e-9
                if not publish_paced(self._publish, self.audio, self.adapter.sample_rate, self.chunk,
                                     self.rate_factor, self._stop, start_stamp) or not self.loop:
                    break
        except Exception:
            if self.context.ok():
                raise
            # Ctrl-C or the launch stopping the graph shut rclpy down under us: nothing left to play to
        finally:
            self.done.set()

    def _publish(self, piece: np.ndarray, stamp: float) -> None:
        self.pub.publish(self.adapter.encode(piece, stamp))
        self.published += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)


def main(args: list[str] | None = None) -> int:
    rclpy.init(args=args)
    try:
        node = FileSource()
    except (ValueError, AudioError, OSError) as err:
        print(f"file_source: {err}", file=sys.stderr)
        rclpy.try_shutdown()
        return 1

    def play(n: FileSource) -> None:
        while rclpy.ok() and not n.done.is_set():
            rclpy.spin_once(n, timeout_sec=0.1)
        n.get_logger().info(f"finished: {n.published} chunks published")
        time.sleep(0.5)  # let reliable transport deliver the last chunks

    return spin_and_close(node, play)


if __name__ == "__main__":
    sys.exit(main())
