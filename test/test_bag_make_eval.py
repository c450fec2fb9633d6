"""lsf-bag make and eval on real files: espeak-ng speech, bags written and read back with rosbags."""
from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from lsf_core.arkit import ARKIT_NAMES
from lsf_core.audio import load_audio
from lsf_ros.audio_adapters import ADAPTERS
from lsf_ros.bags import cli, make, replay
from lsf_ros.bags import evaluate as bag_eval
from lsf_ros.bags import io as B

RATE = 30.0


def _truth_npz(path, duration: float, n_vertices: int = 9, fps: float = 25.0):
    """Ground truth: blendshapes with a moving jaw, vertices with moving lips, regions, phone labels."""
    t = np.arange(int(duration * fps)) / fps
    jaw = 0.5 + 0.4 * np.sin(2 * np.pi * 2.0 * t)
    blend = np.zeros((t.size, len(ARKIT_NAMES)), np.float32)
    blend[:, ARKIT_NAMES.index("jawOpen")] = jaw
    template = np.arange(n_vertices * 3, dtype=np.float32).reshape(n_vertices, 3) * 0.01
    offsets = np.zeros((t.size, n_vertices, 3), np.float32)
    offsets[:, :3, 1] = -0.01 * jaw[:, None]
    np.savez(path, fps=fps, blendshapes=blend, blendshape_names=np.array(ARKIT_NAMES),
             vertices=template[None] + offsets, template=template, lip_indices=np.arange(3),
             upper_indices=np.arange(6, 9), phone_labels=np.array(["M", "AA1", "P", "AE1"]),
             phone_times=np.array([[0.1, 0.2], [0.2, 0.4], [0.4, 0.5], [0.5, 0.7]]))
    return t, blend, template, offsets


@pytest.mark.parametrize("audio_type", list(ADAPTERS))
def test_make_writes_every_audio_type_chunked_and_stamped(tmp_path, speech_wav, audio_type):
    bag = tmp_path / "bag"
    summary = make.make_bag([str(speech_wav)], bag, audio_type=audio_type, chunk=0.02, start=1000.0)
    recs, types = B.read_topics(bag)
    assert types["/audio"] == B.ros_type(audio_type)
    info = [r for t, m in types.items() if m == B.INFO_TYPE for r in recs[t]]
    stream = B.decode_audio(recs["/audio"], types["/audio"], info=info)
    expected = load_audio(speech_wav, 16000)
    assert stream.sample_rate == 16000 and stream.samples.shape == expected.shape
    assert np.abs(stream.samples - expected).max() < 2e-4            # int16 quantisation only
    assert summary["clips"][0]["chunks"] == len(recs["/audio"]) == -(-expected.size // 320)
    # chunk stamps contiguous from the clip start; receive time = end of the chunk
    assert stream.chunk_starts[0] == pytest.approx(1000.0)
    assert np.allclose(np.diff(stream.chunk_starts)[:-1], 0.02, atol=1e-6)
    assert np.allclose(stream.log_times - stream.chunk_starts, stream.chunk_sizes / 16000, atol=1e-6)


def test_make_records_qos_truth_and_clips_in_sqlite3(tmp_path, speech_wav):
    truth = tmp_path / "truth.npz"
    t, blend, template, offsets = _truth_npz(truth, 2.0)
    bag = tmp_path / "bag"
    make.make_bag([str(speech_wav), str(speech_wav)], bag, truths=[str(truth), str(truth)], storage="sqlite3",
               gap=0.7, start=50.0)
    meta = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert meta["storage_identifier"] == "sqlite3" and meta["version"] == 9
    qos = {tm["topic_metadata"]["name"]: tm["topic_metadata"]["offered_qos_profiles"][0]
           for tm in meta["topics_with_message_count"]}
    assert qos["/audio"]["reliability"] == "best_effort"
    assert qos[B.TRUTH_BLENDSHAPES]["reliability"] == "reliable"
    assert qos[B.TRUTH_NEUTRAL]["durability"] == "transient_local"
    found = make.truths_from_bag(bag)
    assert [c["start"] for c, _ in found] == pytest.approx([50.0, 50.0 + found[0][0]["duration"] + 0.7])
    for _, tr in found:
        assert np.allclose(tr.times, t, atol=1e-6)
        assert np.allclose(tr.blendshapes, blend, atol=1e-6)
        assert np.allclose(tr.vertices, template[None] + offsets, atol=1e-6)
        assert tr.lip.tolist() == [0, 1, 2] and [p.label for p in tr.phones] == ["M", "AA1", "P", "AE1"]


def test_make_rejects_bad_input_with_the_reason(tmp_path, speech_wav):
    with pytest.raises(ValueError, match="one file per clip"):
        make.make_bag([str(speech_wav)], tmp_path / "a", truths=["x.npz", "y.npz"])
    with pytest.raises(ValueError, match="unknown"):
        make.make_bag([str(speech_wav)], tmp_path / "b", audio_type="std_msgs/String")
    bad = tmp_path / "bad.npz"
    np.savez(bad, fps=25.0)
    with pytest.raises(ValueError, match="bad.npz: ground truth needs"):
        make.make_bag([str(speech_wav)], tmp_path / "c", truths=[str(bad)])
    (tmp_path / "d").mkdir()
    assert cli.main(["make", str(speech_wav), "-o", str(tmp_path / "d")]) == 1


def _fake_replay(out, source_bag, truth_offsets, rate=RATE, latency=0.1, offset=500.0, drop=(7,), dup=(12,)):
    """An output bag as ``lsf-bag replay`` writes it, with frames that reproduce the ground truth."""
    recs, types = B.read_topics(source_bag)
    clip = B.json_records(recs[B.CLIPS_TOPIC])[0]
    truth = make.truths_from_bag(source_bag)[0][1]
    with B.BagWriter(out) as w:
        for r in recs["/audio"]:
            w.write("/audio", r.msg, r.log_time + offset, B.SENSOR_QOS)
        n = int(clip["duration"] * rate)
        for k in range(n):
            if k in drop:
                continue
            rel = k / rate
            stamp = clip["start"] + offset + rel
            weights = M_interp(truth.times, truth.blendshapes, rel)
            offs = M_interp(truth.times, truth_offsets, rel)
            for _ in range(2 if k in dup else 1):
                w.write("/face/blendshapes", B.joint_state(w.ts, ARKIT_NAMES, weights, stamp), stamp + latency)
                w.write("/face/vertex_offsets", B.point_cloud(w.ts, offs, stamp), stamp + latency)
        summary = {"source": str(source_bag), "audio_topic": "/audio", "offset": offset, "clips": [clip]}
        w.write(B.REPLAY_TOPIC, B.string_msg(w.ts, summary), clip["start"] + offset, B.LATCHED_QOS)
    return n


def M_interp(times, values, t):  # noqa: N802 - one frame of a track
    from lsf_core.evaluation.metrics import resample_track

    return resample_track(times, values, np.array([t]))[0]


def test_eval_reports_what_was_fed(tmp_path, speech_wav):
    truth = tmp_path / "truth.npz"
    _, _, template, offsets = _truth_npz(truth, 2.5)
    src = tmp_path / "src"
    make.make_bag([str(speech_wav)], src, truths=[str(truth)], start=100.0)
    n = _fake_replay(tmp_path / "out", src, offsets)
    out = tmp_path / "report"
    assert cli.main(["eval", str(tmp_path / "out"), "-o", str(out), "--no-offline", "--no-video"]) == 0
    res = json.loads((out / "metrics.json").read_text())
    s = res["summary"]
    assert s["rate_hz"] == pytest.approx(RATE, rel=1e-3)
    assert s["latency"]["p50_ms"] == pytest.approx(100.0, abs=0.01)
    assert s["dropped_frames"] == 1 and s["duplicated_frames"] == 1
    clip = res["clips"][0]
    assert clip["frames"]["frames"] == n and abs(clip["frames"]["expected"] - n) <= 1
    # frames reproduce the ground truth: errors vanish (up to float32 and interpolation)
    assert clip["truth_blendshapes"]["mae"] < 5e-3
    assert clip["truth_vertices"]["mve"] < 1e-4 and clip["truth_vertices"]["lve"] < 1e-7
    assert np.isfinite(clip["truth_vertices"]["fdd"])
    assert clip["lip_sync"]["bilabials"] == 2
    md = (out / "report.md").read_text()
    assert "latency.png" in md and "## Clip speech" in md
    for png in ("latency.png", "clip0_speech_blendshapes.png"):
        assert (out / png).stat().st_size > 5000


def test_eval_agreement_with_an_offline_npz(tmp_path, speech_wav):
    truth = tmp_path / "truth.npz"
    t, blend, template, offsets = _truth_npz(truth, 2.5)
    src = tmp_path / "src"
    make.make_bag([str(speech_wav)], src, start=100.0, truths=[str(truth)])
    _fake_replay(tmp_path / "out", src, offsets, drop=(), dup=())
    offline = tmp_path / "offline.npz"
    late = 0.04   # offline result shifted: agreement must report the lag
    np.savez(offline, fps=25.0, times=t + late, blendshape_names=np.array(ARKIT_NAMES), blendshapes=blend,
             vertex_offsets=offsets, faces=np.array([[0, 1, 2]]), neutral=template)
    res = bag_eval.evaluate(tmp_path / "out", tmp_path / "rep", offline=str(offline), video=False)
    agree = res["clips"][0]["offline_agreement"]
    assert agree["lag_ms"] == pytest.approx(-40.0, abs=6.0)
    assert agree["names"] == len(ARKIT_NAMES) and np.isfinite(agree["mae"])
    assert "vertex_offset_mve_mm" in agree


def test_replay_restamps_stamped_audio_by_the_wall_clock_offset(tmp_path, speech_wav):
    bag = tmp_path / "bag"
    make.make_bag([str(speech_wav)], bag, audio_type="foxglove_msgs/RawAudio", start=100.0)
    with B.open_reader(bag) as reader:
        ts = B.reader_typestore(reader)
        conn = next(c for c in reader.connections if c.topic == "/audio")
        raw = next(bytes(r) for _, _, r in reader.messages(connections=[conn]))
    shifted = ts.deserialize_cdr(replay._restamp(ts, raw, conn.msgtype, 12.25), conn.msgtype)
    assert B.stamp_sec(shifted) == pytest.approx(112.25)
    assert bytes(shifted.data) == bytes(ts.deserialize_cdr(raw, conn.msgtype).data)


_INT16_ARRAY_DEF = """std_msgs/MultiArrayLayout layout
int16[] data
================================================================================
MSG: std_msgs/MultiArrayLayout
std_msgs/MultiArrayDimension[] dim
uint32 data_offset
================================================================================
MSG: std_msgs/MultiArrayDimension
string label
uint32 size
uint32 stride
"""
_JOINT_STATE_DEF = """std_msgs/Header header
string[] name
float64[] position
float64[] velocity
float64[] effort
================================================================================
MSG: std_msgs/Header
builtin_interfaces/Time stamp
string frame_id
================================================================================
MSG: builtin_interfaces/Time
int32 sec
uint32 nanosec
"""


def _mcap_from_the_mcap_libraries(path, speech_wav) -> tuple[float, int]:
    """A bare .mcap as the ``mcap`` / ``mcap-ros2-support`` libraries write it (no metadata.yaml, ros2msg
    schemas, zstd chunks, no rosbag2 QoS metadata): 1024-sample audio chunks and 30 Hz face frames 80 ms late."""
    writer_mod = pytest.importorskip("mcap_ros2.writer", reason="mcap-ros2-support missing (pip install -e .[dev])")
    pcm = np.round(load_audio(speech_wav, 16000) * 32767).astype(np.int16)
    t0 = 1_700_000_000.0
    n_frames = int(pcm.size / 16000 * RATE)
    with open(path, "wb") as f:
        w = writer_mod.Writer(f)
        audio = w.register_msgdef("std_msgs/msg/Int16MultiArray", _INT16_ARRAY_DEF)
        joints = w.register_msgdef("sensor_msgs/msg/JointState", _JOINT_STATE_DEF)
        events = [((k + min(1024, pcm.size - k)) / 16000, "a", k) for k in range(0, pcm.size, 1024)]
        events += [(i / RATE + 0.08, "f", i) for i in range(n_frames)]
        for t, kind, i in sorted(events):
            ns = int((t0 + t) * 1e9)
            if kind == "a":
                msg = {"layout": {"dim": [], "data_offset": 0}, "data": pcm[i:i + 1024].tolist()}
                w.write_message("/audio", audio, msg, log_time=ns, publish_time=ns)
            else:
                stamp = int((t0 + i / RATE) * 1e9)
                msg = {"header": {"stamp": {"sec": stamp // 10**9, "nanosec": stamp % 10**9}, "frame_id": "face"},
                       "name": ["jawOpen"], "position": [0.5], "velocity": [], "effort": []}
                w.write_message("/face/blendshapes", joints, msg, log_time=ns, publish_time=ns)
        w.finish()
    return pcm.size / 16000, n_frames


def test_eval_reads_a_bare_mcap_written_by_the_mcap_libraries(tmp_path, speech_wav):
    """Other tools write bags as one .mcap file, or a folder without metadata.yaml; rosbags reads them, and so
    must lsf-bag. Catches: a reader that insists on a rosbag2 directory, a folder that is not searched."""
    bare = tmp_path / "talk.mcap"
    duration, n_frames = _mcap_from_the_mcap_libraries(bare, speech_wav)
    recs, types = B.read_topics(bare)
    assert types == {"/audio": "std_msgs/msg/Int16MultiArray", "/face/blendshapes": "sensor_msgs/msg/JointState"}
    assert sum(len(r.msg.data) for r in recs["/audio"]) == round(duration * 16000)
    folder = tmp_path / "exported"
    folder.mkdir()
    (folder / bare.name).write_bytes(bare.read_bytes())
    for source in (bare, folder):
        out = tmp_path / f"report_{source.name}"
        assert cli.main(["eval", str(source), "-o", str(out), "--no-offline", "--no-video"]) == 0
        s = json.loads((out / "metrics.json").read_text())["summary"]
        assert s["frames"] == n_frames and s["latency"]["p50_ms"] == pytest.approx(80.0, abs=1.0)


def test_a_bare_db3_reads_as_its_bag_and_ambiguous_folders_are_named(tmp_path, speech_wav):
    """A rosbag2 sqlite3 file without its metadata.yaml reads as the bag it came from; a folder with several
    storage files and no metadata.yaml is an error naming them; anything else says what a bag is."""
    bag = tmp_path / "bag"
    make.make_bag([str(speech_wav)], bag, storage="sqlite3", start=100.0)
    want, want_types = B.read_topics(bag)
    (db3,) = bag.glob("*.db3")
    bare = tmp_path / "copy.db3"
    bare.write_bytes(db3.read_bytes())
    got, got_types = B.read_topics(bare)
    assert got_types == want_types
    assert [r.log_time for r in got["/audio"]] == [r.log_time for r in want["/audio"]]
    two = tmp_path / "two"
    two.mkdir()
    for name in ("a.db3", "b.mcap"):
        (two / name).write_bytes(db3.read_bytes())
    with pytest.raises(ValueError, match=r"no metadata.yaml, and 2 .mcap/.db3 files in it \(a.db3, b.mcap\)"):
        B.read_topics(two)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="not a bag"):
        B.read_topics(tmp_path / "notes.txt")
    with pytest.raises(ValueError, match="no such bag"):
        B.read_topics(tmp_path / "missing.mcap")
