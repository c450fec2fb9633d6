"""Sound devices through sounddevice (PortAudio): pick one by index or name, or fail with a list of them all.

Shared by ``mic_source`` (inputs) and ``speaker`` (outputs): a device parameter that names nothing usable
stops the node at once with an error that lists every device PortAudio sees.
"""
from __future__ import annotations

from typing import Any


class DeviceError(RuntimeError):
    """No usable device; the message lists the devices found."""


def import_sounddevice(who: str, error: type[DeviceError] = DeviceError) -> Any:
    try:
        import sounddevice as sd
    except OSError as err:  # libportaudio2 missing
        raise error(f"{who}: PortAudio is not available ({err}); install libportaudio2") from err
    return sd


def close_stream(stream: Any) -> None:
    """Stop and close a sounddevice stream (None: nothing to do); returns None for ``self.stream = ...``."""
    if stream is not None:
        stream.stop()
        stream.close()


def list_devices(sd: Any) -> str:
    devices = list(sd.query_devices())
    if not devices:
        return "  (none: PortAudio sees no audio device at all)"
    return "\n".join(f"  [{i}] {d['name']} (inputs: {d['max_input_channels']}, "
                     f"outputs: {d['max_output_channels']}, {d['default_samplerate']:.0f} Hz)"
                     for i, d in enumerate(devices))


def resolve_device(sd: Any, device: str, kind: str, who: str, hint: str,
                   error: type[DeviceError] = DeviceError) -> int | str | None:
    """``device`` parameter (index, part of a name, "" = the default) -> sounddevice device for ``kind``
    ("input" or "output"); ``error`` (listing every device, then ``hint``) when unusable."""
    try:
        wanted: int | str | None = int(device) if device.strip().lstrip("-").isdigit() else (device or None)
        info = sd.query_devices(wanted, kind)
        if info[f"max_{kind}_channels"] < 1:
            raise ValueError(f"it has no {kind} channels")
    except (ValueError, sd.PortAudioError) as err:
        what = f"{kind} device {device!r}" if device else f"a default {kind} device"
        raise error(f"{who}: cannot open {what} ({err}). Devices:\n{list_devices(sd)}\n{hint}") from err
    return wanted
