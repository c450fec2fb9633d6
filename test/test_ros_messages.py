"""Message conversion without a running graph: audio adapters, face messages, retargeting, parameters."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="ROS 2 wheels not installed (scripts/setup.sh installs them)")

from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402
from sensor_msgs.msg import PointCloud2  # noqa: E402
from visualization_msgs.msg import Marker  # noqa: E402

from lsf_core.arkit import ARKIT_NAMES  # noqa: E402
from lsf_core.audio import AudioError  # noqa: E402
from lsf_core.config import ConfigError  # noqa: E402
from lsf_core.face.retarget import JointMap, Retargeter, RetargetMap, load_retarget_map  # noqa: E402
from lsf_core.runtime.clock import ChunkClock  # noqa: E402
from lsf_ros import audio_adapters as aa  # noqa: E402
from lsf_ros import face_messages as fm  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


# ---- audio adapters ---------------------------------------------------------------------------------
@pytest.mark.parametrize("type_name,channels,rate", [
    ("std_msgs/Int16MultiArray", 1, 16000),
    ("std_msgs/Float32MultiArray", 2, 48000),
    ("std_msgs/UInt8MultiArray", 1, 22050),
    ("std_msgs/UInt8MultiArray", 2, 44100),
])
def test_std_adapters_round_trip_through_serialization(type_name, channels, rate, rng):
    adapter = aa.make_adapter(type_name, rate, channels)
    x = rng.uniform(-0.5, 0.5, (800, channels)).astype(np.float32)
    msg = adapter.encode(x, 0.0)
    msg = deserialize_message(serialize_message(msg), adapter.msg_class())  # what a subscriber gets
    chunk = adapter.decode(msg)
    assert chunk.samples.shape == (800, channels)
    assert chunk.sample_rate == rate and chunk.stamp is None
    got = chunk.samples.astype(np.float32) / (32768.0 if chunk.samples.dtype.kind == "i" else 1.0)
    np.testing.assert_allclose(got, x, atol=1.0 / 16000)


def test_std_adapter_rejects_bad_messages():
    stereo = aa.make_adapter("std_msgs/Int16MultiArray", 16000, 2)
    with pytest.raises(AudioError, match="multiple of channels=2"):
        stereo.decode(stereo.msg_class()(data=np.zeros(3, np.int16)))
    with pytest.raises(AudioError, match="no samples"):
        stereo.decode(stereo.msg_class()(data=[]))
    pcm = aa.make_adapter("std_msgs/UInt8MultiArray")
    with pytest.raises(AudioError, match="whole number"):
        pcm.decode(pcm.msg_class()(data=b"\x01\x02\x03"))


def test_unavailable_or_unknown_type_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown.*std_msgs/Int16MultiArray"):
        aa.make_adapter("std_msgs/String")
    missing = [n for n, a in aa.ADAPTERS.items() if not a.available()]
    if not missing:
        pytest.skip("every audio message package is installed here")
    with pytest.raises(ValueError, match=r"not importable here; available: .*std_msgs/Int16MultiArray"):
        aa.make_adapter(missing[0])
    assert "std_msgs/Int16MultiArray" in aa.available_types()


@pytest.fixture(scope="module")
def audio_types():
    """The optional audio message types, built from their .msg definitions (rosbags), so the adapters'
    decoding is checked without the packages installed."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    ts = get_typestore(Stores.ROS2_KILTED)
    defs = {
        "ros/AudioData": "uint8[] data",
        "ros/AudioDataStamped": "std_msgs/Header header\nros/AudioData audio",
        "ros/AudioInfo": "uint8 channels\nuint32 sample_rate\nstring sample_format\nuint32 bitrate\n"
                         "string coding_format",
        "mg/AudioData": "float32[] float32_data\nint32[] int32_data\nint16[] int16_data\nint8[] int8_data\n"
                        "uint8[] uint8_data",
        "mg/AudioInfo": "int32 format\nint32 channels\nint32 rate\nint32 chunk",
        "mg/Audio": "mg/AudioData audio_data\nmg/AudioInfo info",
        "mg/AudioStamped": "std_msgs/Header header\nmg/Audio audio",
        "fox/RawAudio": "builtin_interfaces/Time timestamp\nuint8[] data\nstring format\nuint32 sample_rate\n"
                        "uint32 number_of_channels",
    }
    types = {}
    for name, text in defs.items():
        pkg, cls = name.split("/")
        types.update(get_types_from_msg(text, f"{pkg}/msg/{cls}"))
    ts.register(types)
    return {name: ts.types[f"{name.split('/')[0]}/msg/{name.split('/')[1]}"] for name in defs} | {
        "Header": ts.types["std_msgs/msg/Header"], "Time": ts.types["builtin_interfaces/msg/Time"]}


def test_ros_drivers_audio_data_stamped_with_info(audio_types):
    T = audio_types
    pcm = (np.arange(960, dtype=np.int16) - 480).reshape(480, 2)
    msg = T["ros/AudioDataStamped"](header=T["Header"](stamp=T["Time"](sec=12, nanosec=500_000_000), frame_id=""),
                                    audio=T["ros/AudioData"](data=np.frombuffer(pcm.astype("<i2").tobytes(), np.uint8)))
    adapter = aa.AudioDataStampedAdapter()
    adapter.on_info(T["ros/AudioInfo"](channels=2, sample_rate=48000, sample_format="S16LE", bitrate=0,
                                       coding_format="wave"))
    chunk = adapter.decode(msg)
    assert chunk.sample_rate == 48000 and chunk.stamp == pytest.approx(12.5)
    np.testing.assert_allclose(chunk.samples * 32768.0, pcm)


def _info(T, coding="wave", rate=48000, channels=2):
    return T["ros/AudioInfo"](channels=channels, sample_rate=rate, sample_format="S16LE", bitrate=128,
                              coding_format=coding)


def _audio_data(T, payload: bytes):
    return T["ros/AudioData"](data=np.frombuffer(payload, np.uint8))


def test_ros_drivers_audio_waits_for_its_info_instead_of_guessing(audio_types):
    """audio_capture's AudioData carries no rate or channels: until an AudioInfo arrives the node must hold the
    messages (48 kHz stereo was read as 16 kHz mono). Catches: a ros-drivers adapter that does not say it
    needs the info, an info that does not end the wait, a hold that grows without bound or loses order."""
    T = audio_types
    adapter = aa.AudioDataAdapter()                  # defaults: 16 kHz mono, i.e. a guess
    assert adapter.needs_info and aa.waiting_for_info(adapter, True)
    assert not aa.waiting_for_info(adapter, False)   # wait_for_audio_info:=false reads with the parameters
    assert not any(aa.waiting_for_info(a(), True) for a in (aa.Int16MultiArrayAdapter, aa.RawAudioAdapter,
                                                            aa.AudioStampedAdapter))
    held = aa.HeldAudio(limit=3)
    for i in range(5):
        held.hold(i)
    assert held.dropped == 2 and held.release() == [2, 3, 4] and held.release() == []
    adapter.on_info(_info(T))
    assert not aa.waiting_for_info(adapter, True)
    stereo = (np.arange(960, dtype=np.int16) - 480).reshape(480, 2)
    chunk = adapter.decode(_audio_data(T, stereo.astype("<i2").tobytes()))
    assert chunk.sample_rate == 48000 and chunk.samples.shape == (480, 2)


def test_compressed_audio_is_rejected_until_the_info_says_pcm(audio_types):
    """audio_capture's default coding is mp3: every data message must be rejected (counted by the node as
    compressed_messages), never animated as PCM noise, until an AudioInfo says wave again; the warning names
    the coding once, without a repeated "audio_info:" prefix. Catches: mp3 bytes decoded as S16LE after the
    warning, a rejection that stops after the first message, an info of wave that does not lift it."""
    T = audio_types
    adapter = aa.AudioDataAdapter()
    with pytest.raises(AudioError, match="coding_format 'mp3' is compressed") as err:
        adapter.on_info(_info(T, "mp3"))
    assert "audio_info" not in str(err.value)
    mp3ish = bytes(range(256)) * 4                    # even length: would decode as PCM
    assert not aa.waiting_for_info(adapter, True)    # known to be mp3: rejected, not held
    for _ in range(3):
        with pytest.raises(aa.CompressedAudioError, match="mp3"):
            adapter.decode(_audio_data(T, mp3ish))
    adapter.on_info(_info(T, "wave", 16000, 1))
    assert adapter.decode(_audio_data(T, mp3ish)).samples.shape == (512, 1)
    with pytest.raises(AudioError, match="sample_rate=0"):
        adapter.on_info(_info(T, "wave", 0, 1))
    assert adapter.sample_rate == 16000              # a broken info changes nothing


def test_health_warns_on_compressed_and_held_audio():
    """/diagnostics says why nothing moves: compressed audio rejected (while it comes, and the hold after), or
    audio held for an AudioInfo (as long as it is held). Kills: either cause missing from the level or unnamed."""
    from lsf_core.runtime.health import COMPRESSED, OK, WARN, WARN_HOLD, Health

    ok = {"rtf": 0.1, "errors": 0, "model_resets": 0, "device_fallbacks": 0, "dropped_chunks": 0, "bad_messages": 0,
          "clipped_chunks": 0, "input_chunks_per_s": 10.0, "compressed_messages": 0, "held_messages": 0,
          "held_dropped": 0}
    h = Health()
    assert h.assess(ok, 0.0) == (OK, "animating")
    assert h.assess(ok | {"compressed_messages": 4}, 1.0) == (WARN, COMPRESSED)
    assert h.assess(ok | {"compressed_messages": 4}, 1.0 + WARN_HOLD - 0.1) == (WARN, COMPRESSED)
    assert h.assess(ok | {"compressed_messages": 4}, 1.0 + WARN_HOLD + 0.1) == (OK, "animating")
    assert "AudioInfo" in h.assess(ok | {"compressed_messages": 4, "held_messages": 3}, 20.0)[1]
    assert "AudioInfo" in h.assess(ok | {"compressed_messages": 4, "held_messages": 3}, 40.0)[1]
    level, message = h.assess(ok | {"compressed_messages": 4, "held_dropped": 1}, 41.0)
    assert level == WARN and "AudioInfo" in message


@pytest.mark.parametrize("fmt,field,dtype", [(1, "float32_data", np.float32), (8, "int16_data", np.int16)])
def test_mgonzs13_audio_stamped_format_codes(audio_types, fmt, field, dtype):
    T = audio_types
    x = (np.linspace(-0.5, 0.5, 600) * (32767 if dtype == np.int16 else 1)).astype(dtype)
    data = {f: np.zeros(0, d) for f, d in (("float32_data", np.float32), ("int32_data", np.int32),
                                           ("int16_data", np.int16), ("int8_data", np.int8),
                                           ("uint8_data", np.uint8))}
    data[field] = x
    audio = T["mg/Audio"](audio_data=T["mg/AudioData"](**data),
                          info=T["mg/AudioInfo"](format=fmt, channels=1, rate=22050, chunk=600))
    msg = T["mg/AudioStamped"](header=T["Header"](stamp=T["Time"](sec=1, nanosec=0), frame_id=""), audio=audio)
    chunk = aa.AudioStampedAdapter().decode(msg)
    assert chunk.sample_rate == 22050 and chunk.samples.shape == (600, 1) and chunk.stamp == 1.0
    assert chunk.samples.dtype == dtype
    audio.info.format = 64
    with pytest.raises(AudioError, match="unknown AudioInfo.format 64"):
        aa.AudioStampedAdapter().decode(msg)


def test_foxglove_raw_audio(audio_types):
    T = audio_types
    pcm = np.arange(-300, 300, dtype="<i2")
    msg = T["fox/RawAudio"](timestamp=T["Time"](sec=2, nanosec=250_000_000),
                            data=np.frombuffer(pcm.tobytes(), np.uint8), format="pcm-s16", sample_rate=8000,
                            number_of_channels=1)
    chunk = aa.RawAudioAdapter().decode(msg)
    assert chunk.sample_rate == 8000 and chunk.stamp == pytest.approx(2.25) and chunk.samples.shape == (600, 1)
    msg.format = "opus"
    with pytest.raises(AudioError, match="opus"):
        aa.RawAudioAdapter().decode(msg)


def test_chunk_clock_counts_samples_and_resyncs_after_a_pause():
    clock = ChunkClock(resync=0.25)
    # 1024-sample chunks at 16 kHz arriving with jitter: stamps stay exactly contiguous
    arrivals = 100.0 + np.cumsum(np.full(20, 0.064)) + np.random.default_rng(1).uniform(-0.01, 0.01, 20)
    stamps = [clock.stamp(1024, 16000, t) for t in arrivals]
    np.testing.assert_allclose(np.diff(stamps), 0.064, atol=1e-9)
    assert stamps[0] == pytest.approx(arrivals[0] - 0.064)
    later = clock.stamp(1024, 16000, arrivals[-1] + 2.0)  # the source paused for ~2 s
    assert later == pytest.approx(arrivals[-1] + 2.0 - 0.064)


# ---- face messages ----------------------------------------------------------------------------------
def test_blendshapes_and_offsets_messages(rng):
    w = rng.uniform(0, 1, len(ARKIT_NAMES)).astype(np.float32)
    js = fm.blendshapes_msg(list(ARKIT_NAMES), w, 1234.5678, "face")
    assert list(js.name) == list(ARKIT_NAMES) and js.header.frame_id == "face"
    assert fm.to_sec(js.header.stamp) == pytest.approx(1234.5678, abs=1e-9)
    np.testing.assert_allclose(js.position, w, rtol=1e-6)
    off = rng.normal(0, 0.003, (5000, 3)).astype(np.float32)
    cloud = deserialize_message(serialize_message(fm.offsets_cloud(off, 3.0, "face")), PointCloud2)
    assert cloud.width == 5000 and cloud.height == 1 and len(cloud.data) == 5000 * 12
    np.testing.assert_array_equal(fm.cloud_offsets(cloud), off)
    flame = fm.flame_joint_state(np.arange(53, dtype=np.float32), 3.0, "face")
    assert list(flame.name)[:2] == ["exp0", "exp1"] and list(flame.name)[-1] == "jaw2" and len(flame.position) == 53
    assert list(fm.flame_array(np.zeros(53)).data) == [0.0] * 53


def test_mesh_marker_fast_serialization_matches_the_message(rng):
    verts = rng.normal(0, 0.05, (400, 3))
    faces = rng.integers(0, 400, (700, 3))
    mm = fm.MeshMarker(faces, "face")
    for stamp in (0.0, 17.25, 1.7e9 + 0.123):
        got = deserialize_message(mm.serialized(verts, stamp), Marker)
        ref = mm.msg(verts, stamp)
        assert got.type == Marker.TRIANGLE_LIST and len(got.points) == 3 * len(faces)
        assert got.header == ref.header and got.ns == "face" and got.scale.x == 1.0
        pts = np.array([[p.x, p.y, p.z] for p in got.points])
        np.testing.assert_array_equal(pts, verts[faces].reshape(-1, 3))
    with pytest.raises(ValueError, match=r"\(F, 3\)"):
        fm.MeshMarker(np.zeros((0, 3), int), "face")


# ---- retargeting ------------------------------------------------------------------------------------
def test_retarget_example_map_linear_limits_and_velocity():
    rmap = load_retarget_map(REPO / "config" / "retarget_example.yaml")
    rt = Retargeter(rmap, list(ARKIT_NAMES))
    w = np.zeros(len(ARKIT_NAMES))
    w[ARKIT_NAMES.index("jawOpen")] = 0.5
    jaw = rt.joint_names.index("jaw_pitch")
    assert rt.step(w, 0.0)[jaw] == pytest.approx(0.225)          # linear: 0.45 * 0.5
    w[ARKIT_NAMES.index("jawOpen")] = 1.0
    assert rt.step(w, 0.01)[jaw] == pytest.approx(0.225 + 0.03)   # speed limit 3 units/s over 10 ms
    assert rt.step(w, 10.0)[jaw] == pytest.approx(0.4)           # joint limit (0.45 > max 0.4)


def test_retarget_map_errors_name_the_problem(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("joints:\n  - name: j\n    weights: {notAShape: 1.0}\n")
    with pytest.raises(ConfigError, match="notAShape"):
        Retargeter(load_retarget_map(bad), list(ARKIT_NAMES), str(bad))
    bad.write_text("joints:\n  - name: j\n    weights: {jawOpen: 1.0}\n    min: 1.0\n    max: 0.0\n")
    with pytest.raises(ConfigError, match="min 1.0 is above max 0.0"):
        load_retarget_map(bad)
    # rig-style _L/_R spellings map onto the ARKit names
    rt = Retargeter(RetargetMap(joints=[JointMap("smile", {"mouthSmile_L": 1.0})]), list(ARKIT_NAMES))
    assert rt.matrix[0, ARKIT_NAMES.index("mouthSmileLeft")] == 1.0 and rt.matrix.sum() == 1.0


# ---- animator parameters ----------------------------------------------------------------------------
def test_animator_parameter_checks_and_descriptors():
    from rcl_interfaces.msg import ParameterType

    from lsf_ros.animator_node import PARAMS, check_value, descriptor

    assert "within 25.0..120.0" in check_value("rate", 500.0)
    assert check_value("rate", 60.0) is None
    assert "one of auto, cpu, cuda" in check_value("device", "tpu")
    d = descriptor("rate", PARAMS["rate"])
    assert d.type == ParameterType.PARAMETER_DOUBLE and not d.read_only
    assert d.floating_point_range[0].from_value == 25.0 and d.floating_point_range[0].to_value == 120.0
    assert descriptor("model", PARAMS["model"]).read_only
    assert descriptor("sample_rate", PARAMS["sample_rate"]).integer_range[0].to_value == 192000


def test_animator_holds_audio_for_its_info_and_rejects_mp3(ros_ctx):
    """The animator's wiring for ros-drivers audio (audio_common_msgs is not installable here, so its AudioData
    is stood in for by std_msgs/UInt8MultiArray, which has the same ``data`` field; the AudioInfo by a plain
    object): messages before any AudioInfo are held, not read as 16 kHz mono, and animated at the info's rate
    once it comes; while the info says mp3 every message is rejected and counted in compressed_messages.
    Catches: the node decoding before the info, held audio never released, mp3 bytes reaching the engine."""
    from types import SimpleNamespace

    from rclpy.serialization import serialize_message
    from std_msgs.msg import UInt8MultiArray

    from lsf_ros.animator_node import AnimatorNode

    class StandInAudioData(aa.AudioDataAdapter):
        module, cls = "std_msgs.msg", "UInt8MultiArray"

    node = AnimatorNode(context=ros_ctx)
    try:
        node.adapter, node._msg_class = StandInAudioData(), UInt8MultiArray
        stereo48k = np.zeros((960, 2), "<i2")             # 20 ms at 48 kHz stereo
        raw = serialize_message(UInt8MultiArray(data=stereo48k.tobytes()))
        for _ in range(3):
            node._on_audio(raw, {})
        assert node.worker.counts["chunks"] == 0 and len(node._held.items) == 3
        info = SimpleNamespace(channels=2, sample_rate=48000, sample_format="S16LE", bitrate=0, coding_format="wave")
        node._on_info(info)
        assert len(node._held.items) == 0 and node.worker.counts["chunks"] == 3
        assert node.worker.counts["samples"] == 3 * 960           # read as 48 kHz stereo, not 3840 mono samples
        node._on_info(SimpleNamespace(**{**vars(info), "coding_format": "mp3"}))
        bad = node.counts["bad_messages"]
        for _ in range(4):
            node._on_audio(raw, {})
        assert node.counts["compressed_messages"] == 4 and node.worker.counts["chunks"] == 3
        assert node.counts["bad_messages"] == bad
        node._on_info(info)
        node._on_audio(raw, {})
        assert node.worker.counts["chunks"] == 4
    finally:
        node.close()
        node.destroy_node()
