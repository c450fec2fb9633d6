"""A virtual sound card for tests and benchmarks: a private PulseAudio server with one null sink.

``NullSinkServer`` starts ``pulseaudio`` as an ordinary (non-system) daemon in a temporary directory, with
a null sink (a sound card that plays into nothing, on the system clock) and a unix socket of its own, so
runs beside each other never meet. Clients reach it through ``env()`` (``PULSE_SERVER``): PortAudio through
its ALSA back end and the alsa-plugins ``pulse`` device (Debian ``libasound2-plugins``), ``parec`` directly.
``record()`` captures the sink's monitor with ``parec``, timing every sample on the system clock
(independently of the player: what left the virtual card, and when). Always stopped on exit: no daemon
outlives its ``with`` block.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

SINK = "lsf_null"
ALSA_PULSE_PLUGIN = tuple(f"/usr/{lib}/alsa-lib/libasound_module_pcm_pulse.so" for lib in (
    "lib/x86_64-linux-gnu", "lib/aarch64-linux-gnu", "lib", "lib64"))


def unavailable_reason() -> str | None:
    """Why no virtual sound card can exist here (None when one can): the programs scripts/setup.sh installs."""
    missing = [p for p in ("pulseaudio", "parec") if shutil.which(p) is None]
    if missing:
        return f"{' and '.join(missing)} not installed (Debian pulseaudio, pulseaudio-utils; scripts/setup.sh)"
    if not any(Path(p).exists() for p in ALSA_PULSE_PLUGIN):
        return "the ALSA pulse plugin is not installed (Debian libasound2-plugins; scripts/setup.sh)"
    return None


class SoundServerError(RuntimeError):
    """The virtual sound card could not be started; the message holds the server's own words."""


class NullSinkServer:
    def __init__(self, rate: int = 16000, channels: int = 1, startup_timeout: float = 15.0):
        self.rate, self.channels, self.startup_timeout = rate, channels, startup_timeout
        self.dir: Path | None = None
        self.proc: subprocess.Popen | None = None

    @property
    def socket(self) -> Path:
        return self.dir / "native"

    def env(self) -> dict[str, str]:
        """Environment entries that send PulseAudio clients (and ALSA's pulse device) to this server."""
        return {"PULSE_SERVER": f"unix:{self.socket}"}

    def start(self) -> NullSinkServer:
        reason = unavailable_reason()
        if reason:
            raise SoundServerError(reason)
        self.dir = Path(tempfile.mkdtemp(prefix="lsf_pulse_"))
        conf = self.dir / "server.pa"
        conf.write_text(f"load-module module-null-sink sink_name={SINK} rate={self.rate} channels={self.channels}\n"
                        f"load-module module-native-protocol-unix auth-anonymous=1 socket={self.socket}\n"
                        f"set-default-sink {SINK}\n")
        env = {**os.environ, "HOME": str(self.dir), "PULSE_RUNTIME_PATH": str(self.dir / "run"),
               "PULSE_STATE_PATH": str(self.dir / "state"), "XDG_CONFIG_HOME": str(self.dir / "config")}
        env.pop("PULSE_SERVER", None)
        self.proc = subprocess.Popen(["pulseaudio", "-n", "-F", str(conf), "--daemonize=no", "--exit-idle-time=-1",
                                      "--system=false", "--use-pid-file=false", "--log-target=stderr"],
                                     env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read()[-1500:]
                self.stop()
                raise SoundServerError(f"pulseaudio exited with status {self.proc.returncode}: {err}")
            if self._accepts():
                return self
            time.sleep(0.05)
        self.stop()
        raise SoundServerError(f"pulseaudio did not open {self.socket} within {self.startup_timeout:.0f} s")

    def _accepts(self) -> bool:
        if not self.socket.exists():
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            try:
                s.connect(str(self.socket))
            except OSError:
                return False
        return True

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self) -> NullSinkServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def record(self, block: int = 160) -> MonitorRecording:
        """Start recording what the null sink plays (its monitor), ``block`` samples per read."""
        return MonitorRecording(self, block)


class MonitorRecording:
    """``parec`` on the sink's monitor; each sample is timed on the system clock (``time.time()``).

    A read of a block returns no earlier than its last sample was captured, and usually a little later (the
    reader thread's own delays): the time line is the lower envelope of (read time - samples so far / rate)
    over a sliding second, so late reads do not bias it and a stall of the server (a jump) is followed.
    """

    WINDOW_S = 1.0

    def __init__(self, server: NullSinkServer, block: int):
        self.rate, self.block = server.rate, block
        self._proc = subprocess.Popen(["parec", "--raw", "--format=s16le", f"--rate={server.rate}", "--channels=1",
                                       "--latency-msec=10", "-d", f"{SINK}.monitor"],
                                      env={**os.environ, **server.env()}, stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL, bufsize=0)
        self._blocks: list[np.ndarray] = []
        self._times: list[float] = []
        self._thread = threading.Thread(target=self._read, name="monitor-recorder", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        size = 2 * self.block
        while True:
            data = b""
            while len(data) < size:
                more = self._proc.stdout.read(size - len(data))
                if not more:
                    return
                data += more
            self._times.append(time.time())
            self._blocks.append(np.frombuffer(data, "<i2"))

    def wait_for_audio(self, timeout: float = 10.0, seconds: float = 0.5) -> bool:
        """Wait until ``seconds`` of the monitor have been recorded: past the stall a new PulseAudio stream has
        after its first blocks (1.8 s on the test machine), in which what the sink plays is not recorded."""
        deadline = time.monotonic() + timeout
        while len(self._blocks) * self.block < seconds * self.rate and time.monotonic() < deadline:
            time.sleep(0.02)
        return len(self._blocks) * self.block >= seconds * self.rate

    def stop(self) -> tuple[np.ndarray, np.ndarray]:
        """End the recording: (samples float32 in -1..1, time of each sample in s on the system clock)."""
        self._proc.terminate()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=5)
        self._thread.join(timeout=5)
        self._proc.stdout.close()
        n = len(self._times)
        if n == 0:
            return np.zeros(0, np.float32), np.zeros(0)
        from scipy.ndimage import minimum_filter1d

        x = np.concatenate(self._blocks[:n]).astype(np.float32) / 32768.0
        ends = np.arange(1, n + 1) * self.block
        anchor = np.asarray(self._times[:n]) - ends / self.rate      # >= true time of sample 0
        span = max(1, int(self.WINDOW_S * self.rate / self.block))
        anchor = minimum_filter1d(anchor, size=2 * span + 1, mode="nearest")
        times = np.repeat(anchor, self.block) + np.arange(n * self.block) / self.rate
        return x, times
