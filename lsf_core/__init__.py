"""lsf_core: LSF-Animation model, audio, rigs, streaming, training and tools. Never imports ROS."""

__version__ = "0.1.0"

from pathlib import Path as _Path

ASSETS_DIR = _Path(__file__).resolve().parent / "assets"
DEMO_CLIP = ASSETS_DIR / "demo.wav"  # espeak-ng speech made by us, 7.8 s, 16 kHz
