"""The animator's head and gaze in ROS: ``face/head_pose`` (geometry_msgs/PoseStamped, always), the same pose
on TF (``head_parent_frame`` -> ``head_frame``, when tf2_ros is importable), and a gaze target from
``face/gaze_target`` (geometry_msgs/PointStamped) or from a TF frame (``gaze_target_frame``).

tf2_ros and tf2_msgs are not among the PyPI ROS wheels: on a pip-only machine TF is off (logged once),
face/head_pose is still published, and gaze targets must be given in ``head_parent_frame`` (or with an empty
frame_id). On a ROS install, points in any frame TF knows are transformed. Targets that are bad, in an
unknown frame or out of reach are logged (rate limited) and never stop the node; a target not refreshed
within ``gaze_timeout`` s is dropped and the gaze returns to natural behaviour.
"""
from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
from geometry_msgs.msg import PointStamped, PoseStamped
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

from lsf_core.face.head_pose import parent_transform
from lsf_ros import face_messages as fm

TARGET_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)


def import_tf2() -> Any:
    """The tf2_ros module, or None where it is not installed (pip-only machines)."""
    try:
        import tf2_ros
    except ImportError:
        return None
    return tf2_ros


def _rotate(q: Any, v: np.ndarray) -> np.ndarray:
    """Rotate ``v`` by the quaternion message ``q``."""
    u = np.array([q.x, q.y, q.z])
    return v + 2.0 * np.cross(u, np.cross(u, v) + q.w * v)


class HeadGaze:
    def __init__(self, node: Any, animator: Any, lock: Any, pose_qos: QoSProfile, parent_frame: str, head_frame: str,
                 target_frame: str, timeout: float):
        self.node, self.animator, self.lock = node, animator, lock
        self.parent, self.child, self.target_frame, self.timeout = parent_frame, head_frame, target_frame, timeout
        self.log = node.get_logger()
        self.pub_pose = node.create_publisher(PoseStamped, "face/head_pose", pose_qos)
        tf2 = import_tf2()
        self.tf_out = self.tf_buffer = None
        if tf2 is not None:
            self.tf_out = tf2.TransformBroadcaster(node)
            self.tf_buffer = tf2.Buffer()
            self._tf_listener = tf2.TransformListener(self.tf_buffer, node)
        else:
            self.log.info("tf2_ros is not installed here: no TF output (face/head_pose carries the head pose); "
                          f"gaze targets must be given in {parent_frame!r}")
            if target_frame:
                self.log.warning(f"gaze_target_frame={target_frame!r} needs tf2_ros, which is not installed: ignored "
                                 "(publish geometry_msgs/PointStamped on face/gaze_target instead)")
        self.targets = {"received": 0, "rejected": 0, "dropped": 0}
        node.create_subscription(PointStamped, "face/gaze_target", self._on_target, TARGET_QOS)
        node.create_timer(0.05, self._tick)

    # ---- output -------------------------------------------------------------------------------------
    def publish(self, frame: Any) -> None:
        yaw, pitch, roll = (float(a) for a in frame.pose[:3])
        translation, q = parent_transform(yaw, pitch, roll, self.animator.head_pivot)
        self.pub_pose.publish(fm.head_pose_msg(translation, q, frame.stamp, self.parent))
        if self.tf_out is not None:
            self.tf_out.sendTransform(fm.head_transform_msg(translation, q, frame.stamp, self.parent, self.child))

    # ---- gaze target --------------------------------------------------------------------------------
    def _reject(self, why: str) -> None:
        self.targets["rejected"] += 1
        self.log.warning(f"gaze target: {why} ({self.targets['rejected']} so far)", throttle_duration_sec=5.0)

    def _in_parent(self, point: np.ndarray, frame: str) -> np.ndarray | None:
        if frame in ("", self.parent):
            return point
        if self.tf_buffer is None:
            self._reject(f"frame {frame!r} cannot be transformed to {self.parent!r}: tf2_ros is not installed "
                         f"(send points in {self.parent!r})")
            return None
        try:
            from rclpy.time import Time

            tf = self.tf_buffer.lookup_transform(self.parent, frame, Time()).transform
        except Exception as err:  # noqa: BLE001 - tf2 raises several lookup/extrapolation errors: all are one bad target
            self._reject(f"no transform from {frame!r} to {self.parent!r} ({type(err).__name__}: {err})")
            return None
        t = tf.translation
        return _rotate(tf.rotation, point) + np.array([t.x, t.y, t.z])

    def _look(self, point: np.ndarray) -> None:
        with self.lock:
            reason = self.animator.liveliness.look_at(point, time.monotonic())
        self.targets["received"] += 1
        if reason:
            self._reject(reason)

    def _on_target(self, msg: PointStamped) -> None:
        p = np.array([msg.point.x, msg.point.y, msg.point.z], np.float64)
        if not np.isfinite(p).all():
            self._reject(f"point {p.tolist()} is not finite: ignored")
            return
        in_parent = self._in_parent(p, msg.header.frame_id)
        if in_parent is not None:
            self._look(in_parent)

    def _tick(self) -> None:
        if self.target_frame and self.tf_buffer is not None:
            point = self._in_parent(np.zeros(3), self.target_frame)
            if point is not None and all(math.isfinite(v) for v in point):
                self._look(point)
        with self.lock:
            dropped = self.animator.liveliness.drop_stale_target(time.monotonic(), self.timeout)
        if dropped:
            self.targets["dropped"] += 1
            self.log.info(f"gaze target not refreshed for {self.timeout:g} s: natural gaze again",
                          throttle_duration_sec=5.0)
