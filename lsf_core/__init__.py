"""lsf_core: LSF-Animation model, audio, rigs, streaming, training and tools. Never imports ROS."""

__version__ = "0.1.0"
