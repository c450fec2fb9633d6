"""lsf_core: LSF-Animation without ROS: audio, the networks, faces, the streaming engine, data, training,
evaluation and the ``lsf`` command line.

Layers, lowest first; each may import only its own and lower ones:
``arkit``, ``audio``, ``config``, ``safe_pickle`` (top-level modules) < ``models`` < ``face`` < ``runtime``
< ``data`` < ``evaluation`` < ``training`` < ``cli``. Never imports ROS (``test/test_layout.py`` checks).
"""

__version__ = "0.1.0"

from pathlib import Path as _Path

ASSETS_DIR = _Path(__file__).resolve().parent / "assets"
DEMO_CLIP = ASSETS_DIR / "demo.wav"  # espeak-ng speech made by us, 7.8 s, 16 kHz
