"""Animation frames -> ROS messages (and back, for recorders and tests).

Every output carries the audio time the frame shows as its stamp, so a renderer can sync to playback:
- blendshapes: sensor_msgs/JointState, ARKit names, position = weight in 0..1;
- head pose: geometry_msgs/PoseStamped (and TransformStamped for TF) of the face frame in the head parent frame;
- vertex offsets: sensor_msgs/PointCloud2, x/y/z float32 per vertex, metres from the neutral mesh;
- FLAME: sensor_msgs/JointState named exp0..exp49, jaw0..jaw2 (or std_msgs/Float32MultiArray);
- mesh: visualization_msgs/Marker TRIANGLE_LIST (3 points per triangle). A 10k-triangle marker built
  point by point costs ~0.1 s in Python, so ``MeshMarker.serialized`` patches the stamp and the point
  block of a pre-serialized CDR template instead (same bytes, ~1 ms); publishers accept the bytes.
"""
from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point, PoseStamped, TransformStamped
from rclpy.serialization import serialize_message
from sensor_msgs.msg import JointState, PointField
from sensor_msgs.msg import PointCloud2 as PointCloud2Msg
from std_msgs.msg import ColorRGBA, Float32MultiArray, Header, MultiArrayDimension
from visualization_msgs.msg import Marker

FLAME_NAMES: tuple[str, ...] = tuple(f"exp{i}" for i in range(50)) + ("jaw0", "jaw1", "jaw2")
_XYZ_FIELDS = [PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1)
               for i, n in enumerate("xyz")]
_CDR_HEADER = 4          # encapsulation header in front of every serialized message


def time_msg(seconds: float) -> Time:
    ns = int(round(seconds * 1e9))
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def to_sec(t: Time) -> float:
    return t.sec + t.nanosec * 1e-9


def header(stamp: float, frame_id: str) -> Header:
    return Header(stamp=time_msg(stamp), frame_id=frame_id)


def blendshapes_msg(names: list[str], weights: np.ndarray, stamp: float, frame_id: str) -> JointState:
    return JointState(header=header(stamp, frame_id), name=list(names),
                      position=np.asarray(weights, np.float64).ravel())


def joints_msg(names: list[str], positions: np.ndarray, stamp: float, frame_id: str) -> JointState:
    return blendshapes_msg(names, positions, stamp, frame_id)


def head_pose_msg(translation: np.ndarray, quaternion: np.ndarray, stamp: float, parent: str) -> PoseStamped:
    """The face frame's pose in ``parent``: translation (m) and quaternion (x, y, z, w)."""
    msg = PoseStamped(header=header(stamp, parent))
    msg.pose.position.x, msg.pose.position.y, msg.pose.position.z = (float(v) for v in translation)
    q = msg.pose.orientation
    q.x, q.y, q.z, q.w = (float(v) for v in quaternion)
    return msg


def head_transform_msg(translation: np.ndarray, quaternion: np.ndarray, stamp: float, parent: str,
                       child: str) -> TransformStamped:
    msg = TransformStamped(header=header(stamp, parent), child_frame_id=child)
    tr, q = msg.transform.translation, msg.transform.rotation
    tr.x, tr.y, tr.z = (float(v) for v in translation)
    q.x, q.y, q.z, q.w = (float(v) for v in quaternion)
    return msg


def offsets_cloud(offsets: np.ndarray, stamp: float, frame_id: str) -> PointCloud2Msg:
    xyz = np.ascontiguousarray(offsets, dtype="<f4").reshape(-1, 3)
    return PointCloud2Msg(header=header(stamp, frame_id), height=1, width=xyz.shape[0], fields=_XYZ_FIELDS,
                          is_bigendian=False, point_step=12, row_step=12 * xyz.shape[0],
                          data=xyz.tobytes(), is_dense=True)


def cloud_offsets(msg: PointCloud2Msg) -> np.ndarray:
    """Inverse of ``offsets_cloud``: (V, 3) float32."""
    if msg.point_step != 12 or [f.name for f in msg.fields] != ["x", "y", "z"]:
        raise ValueError("vertex offset cloud must hold packed x, y, z float32 points")
    return np.frombuffer(bytes(msg.data), "<f4").reshape(-1, 3)


def flame_joint_state(flame: np.ndarray, stamp: float, frame_id: str) -> JointState:
    return blendshapes_msg(list(FLAME_NAMES), flame, stamp, frame_id)


def flame_array(flame: np.ndarray) -> Float32MultiArray:
    msg = Float32MultiArray(data=np.asarray(flame, np.float32).ravel())
    msg.layout.dim = [MultiArrayDimension(label="exp50_jaw3", size=len(FLAME_NAMES), stride=len(FLAME_NAMES))]
    return msg


class MeshMarker:
    """Triangle-list marker of a fixed topology; vertices change per frame."""

    def __init__(self, faces: np.ndarray, frame_id: str, ns: str = "face", marker_id: int = 0,
                 color: tuple[float, float, float, float] = (0.85, 0.72, 0.62, 1.0)):
        self.faces = np.asarray(faces, np.int64)
        if self.faces.ndim != 2 or self.faces.shape[1] != 3 or self.faces.shape[0] == 0:
            raise ValueError(f"mesh faces must be (F, 3) with F > 0, got {self.faces.shape}")
        self.frame_id, self.ns, self.marker_id, self.color = frame_id, ns, marker_id, color
        self._template: bytearray | None = None
        self._points_at = 0

    def points(self, vertices: np.ndarray) -> np.ndarray:
        """(3F, 3) float64 corner positions, 3 per triangle."""
        return np.asarray(vertices, np.float64)[self.faces].reshape(-1, 3)

    def msg(self, vertices: np.ndarray, stamp: float) -> Marker:
        m = Marker(header=header(stamp, self.frame_id), ns=self.ns, id=self.marker_id,
                   type=Marker.TRIANGLE_LIST, action=Marker.ADD)
        m.pose.orientation.w = 1.0
        m.scale.x = m.scale.y = m.scale.z = 1.0
        m.color = ColorRGBA(r=self.color[0], g=self.color[1], b=self.color[2], a=self.color[3])
        m.points = [Point(x=x, y=y, z=z) for x, y, z in self.points(vertices).tolist()]
        return m

    def serialized(self, vertices: np.ndarray, stamp: float) -> bytes:
        """CDR bytes of ``msg(vertices, stamp)`` without building 3F Point objects."""
        pts = self.points(vertices)
        if self._template is None:
            self._build_template(pts.shape[0])
        buf = self._template.copy()
        t = time_msg(stamp)
        buf[_CDR_HEADER:_CDR_HEADER + 8] = np.array([t.sec], "<i4").tobytes() + np.array([t.nanosec], "<u4").tobytes()
        buf[self._points_at:self._points_at + pts.nbytes] = pts.astype("<f8").tobytes()
        return bytes(buf)

    def _build_template(self, n: int) -> None:
        # The first point's x holds a marker value; its position is where the point block starts.
        # (Padding bytes after strings are not zeroed by the serializer, so compare no whole buffers.)
        probe = float.fromhex("0x1.23456789abcdep+3")
        base = self.msg(np.zeros((int(self.faces.max()) + 1, 3)), 0.0)
        base.points[0] = Point(x=probe)
        buf = bytearray(serialize_message(base))
        self._points_at = buf.find(np.array([probe], "<f8").tobytes())
        at = self._points_at
        if at < 0 or len(buf) < at + n * 24 or buf.count(buf[at:at + 8]) != 1:
            raise RuntimeError("unexpected Marker serialization layout")
        self._template = buf
