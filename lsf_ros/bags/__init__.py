"""rosbag2 bags without a ROS install: the ``lsf-bag`` tool.

What lives here: reading and writing bags with our audio and face types (``io``), making evaluation
bags from audio files (``make``), replaying a bag through the running graph (``replay``, the only part
that starts rclpy), evaluating a recording (``evaluate``) and the command line (``cli``). May import
lsf_core and ``lsf_ros.audio_adapters``; nothing in lsf_ros imports it.
"""
