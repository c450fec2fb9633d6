"""lsf_ros: thin ROS 2 glue around lsf_core."""
