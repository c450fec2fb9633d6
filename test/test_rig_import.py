"""``lsf data import-rig``: rig-channel arrays through a mapping file (FACEGOOD's 116 channels -> ARKit, on a
3 s MIT-licensed excerpt in test/fixtures/real) and Live Link Face CSV takes, and their errors."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from lsf_core.arkit import ARKIT_INDEX, ARKIT_NAMES
from lsf_core.cli.main import main
from lsf_core.data.rig_import import RigImportError, import_live_link, import_rig_array, load_mapping

REPO = Path(__file__).resolve().parents[1]
FIX = REPO / "test" / "fixtures" / "real"
MAPPING = REPO / "config" / "rig_maps" / "facegood_arkit.yaml"
RIG, WAV = FIX / "facegood_1114_3_15_head.npy", FIX / "facegood_1114_3_15_head.wav"


def test_facegood_mapping_to_arkit():
    """Catches: columns looked up by the wrong name or index, 'max' combination not applied, 30 fps motion put on
    the 25 fps grid without resampling, unmapped channels (eyes, brows, tongue) left unmasked."""
    m = load_mapping(MAPPING)
    assert len(m.rig_names) == 116 and m.rig_fps == 30 and m.channels["jawOpen"] == ["mouth_stretch_c"]
    rig = np.load(RIG)
    clip = import_rig_array(RIG, WAV, m)
    w, mask = clip["weights"], clip["mask"]
    assert w.shape == (75, 52) and clip["audio"].size == 48000
    col = {n: i for i, n in enumerate(m.rig_names)}
    t = np.arange(75) / 25.0
    jaw = np.interp(t, np.arange(90) / 30.0, rig[:, col["mouth_stretch_c"]])
    assert np.allclose(w[:, ARKIT_INDEX["jawOpen"]], jaw, atol=1e-5)
    funnel = rig[:, [col[n] for n in ("mouth_funnel_dl", "mouth_funnel_dr", "mouth_funnel_ul", "mouth_funnel_ur")]]
    assert np.allclose(w[:, ARKIT_INDEX["mouthFunnel"]], np.interp(t, np.arange(90) / 30.0, funnel.max(1)), atol=1e-5)
    assert w[:, ARKIT_INDEX["jawOpen"]].std() > 0.05
    assert mask[:, ARKIT_INDEX["jawOpen"]].all() and mask[:, ARKIT_INDEX["mouthUpperUpLeft"]].all()
    for name in ("eyeBlinkLeft", "browInnerUp", "cheekPuff", "tongueOut"):
        assert not mask[:, ARKIT_INDEX[name]].any(), name
    assert mask.sum(1).max() == len(m.channels) == 27


def test_rig_import_errors_name_the_file_and_the_problem(tmp_path):
    """Catches: a wrong frame rate, a wrong column count or a broken mapping accepted silently (or an error
    without the file name and the reason)."""
    m = load_mapping(MAPPING)
    with pytest.raises(RigImportError, match=r"facegood_1114_3_15_head.npy: 90 frames at 25 fps .* 30.0 fps would fit"):
        import_rig_array(RIG, WAV, m, fps=25)
    narrow = tmp_path / "narrow.npy"
    np.save(narrow, np.load(RIG)[:, :100])
    with pytest.raises(RigImportError, match=r"narrow.npy: shape \(90, 100\).*\(frames, 116\)"):
        import_rig_array(narrow, WAV, m)
    bad = tmp_path / "bad.yaml"
    bad.write_text("rig_names: [a, b]\nrig_fps: 30\nchannels: {jawOpen: [c]}\n")
    with pytest.raises(RigImportError, match=r"bad.yaml: channels: jawOpen: rig channel\(s\) c not in rig_names"):
        load_mapping(bad)
    bad.write_text("rig_names: [a, b]\nrig_fps: 30\nchannels: {jaw_open: [a]}\n")
    with pytest.raises(RigImportError, match="'jaw_open' is not an ARKit name"):
        load_mapping(bad)
    bad.write_text("rig_names: [a, b]\nchannels: {jawOpen: [a]}\n")
    with pytest.raises(RigImportError, match="missing key.*rig_fps"):
        load_mapping(bad)


def _live_link_csv(path: Path, frames: int, fps: int, drop: str | None = None) -> np.ndarray:
    """A Live Link Face style take: Timecode, BlendShapeCount, 52 capitalised ARKit names, head angles."""
    names = [n[0].upper() + n[1:] for n in ARKIT_NAMES if n[0].upper() + n[1:] != drop]
    values = np.zeros((frames, len(ARKIT_NAMES)))
    values[:, ARKIT_INDEX["jawOpen"]] = 0.3 + 0.3 * np.sin(np.arange(frames) / fps * 2 * np.pi * 2)
    lines = [",".join(["Timecode", "BlendShapeCount", *names, "HeadYaw", "HeadPitch", "HeadRoll"])]
    for i in range(frames):
        s, f = divmod(i, fps)
        row = [f"10:20:{30 + s:02d}:{f:02d}.0", "61"]
        row += [f"{values[i, ARKIT_INDEX[n[0].lower() + n[1:]]]:.5f}" for n in names]
        lines.append(",".join(row + ["0.1", "-0.05", "0.0"]))
    path.write_text("\n".join(lines) + "\n")
    return values


def test_live_link_csv_take(tmp_path):
    """Catches: CSV columns mapped to the wrong ARKit channel, 60 fps not resampled to the model grid, head angles
    dropped, a missing column, a wrong fps or a length mismatch accepted."""
    wav = tmp_path / "take.wav"
    sf.write(wav, np.zeros(32000, np.float32), 16000)
    values = _live_link_csv(tmp_path / "take.csv", 120, 60)
    clip = import_live_link(tmp_path / "take.csv", wav, fps=60)
    t = np.arange(50) / 25.0
    assert np.allclose(clip["weights"][:, ARKIT_INDEX["jawOpen"]],
                       np.interp(t, np.arange(120) / 60.0, values[:, ARKIT_INDEX["jawOpen"]]), atol=1e-4)
    assert clip["mask"].all() and np.allclose(clip["head_pose"][:, :3], [0.1, -0.05, 0.0])
    with pytest.raises(RigImportError, match="timecode counts frames up to 59, so the take is not 30 fps"):
        import_live_link(tmp_path / "take.csv", wav, fps=30)
    _live_link_csv(tmp_path / "short.csv", 60, 60)
    with pytest.raises(RigImportError, match=r"short.csv: 60 frames at 60 fps last 1.00 s but the audio lasts 2.00 s"):
        import_live_link(tmp_path / "short.csv", wav, fps=60)
    _live_link_csv(tmp_path / "nojaw.csv", 120, 60, drop="JawOpen")
    with pytest.raises(RigImportError, match="nojaw.csv: missing column.*JawOpen"):
        import_live_link(tmp_path / "nojaw.csv", wav, fps=60)
    _live_link_csv(tmp_path / "notongue.csv", 120, 60, drop="TongueOut")
    clip = import_live_link(tmp_path / "notongue.csv", wav, fps=60)
    assert not clip["mask"][:, ARKIT_INDEX["tongueOut"]].any() and clip["mask"][:, ARKIT_INDEX["jawOpen"]].all()


def test_import_cli_batch_keeps_going(tmp_path, capsys):
    """Catches: the CLI stopping at the first bad take, or not reporting what it skipped and why."""
    audio = tmp_path / "wav"
    audio.mkdir()
    (audio / "1114_3_15_head.wav").write_bytes(WAV.read_bytes())
    good = tmp_path / "bs_value_1114_3_15_head.npy"
    good.write_bytes(RIG.read_bytes())
    orphan = tmp_path / "bs_value_9999.npy"
    orphan.write_bytes(RIG.read_bytes())
    out = tmp_path / "out"
    rc = main(["data", "import-rig", str(orphan), str(good), "-o", str(out), "--audio-dir", str(audio),
               "--mapping", str(MAPPING), "--licence", "MIT", "--provenance", "github:FACEGOOD/FACEGOOD-Audio2Face"])
    assert rc == 0
    report = json.loads((out / "import_report.json").read_text())
    assert [Path(w["npz"]).name for w in report["written"]] == ["bs_value_1114_3_15_head.npz"]
    assert report["skipped"][0]["file"] == str(orphan) and "no audio" in report["skipped"][0]["reason"]
    assert "skipped" in capsys.readouterr().out
    with np.load(out / "bs_value_1114_3_15_head.npz", allow_pickle=False) as z:
        assert str(z["licence"]) == "MIT" and z["weights"].shape == (75, 52)


def test_mapping_combines_several_rig_channels(tmp_path):
    """Catches: several rig channels for one ARKit name not combined as the mapping says (FACEGOOD's paired
    channels are equal, so this uses a rig whose channels differ)."""
    wav = tmp_path / "a.wav"
    sf.write(wav, np.zeros(16000, np.float32), 16000)
    rig = np.zeros((25, 3), np.float32)
    rig[:, 0], rig[:, 1] = 0.2, 0.5
    np.save(tmp_path / "rig.npy", rig)
    for combine, expected in (("max", 0.5), ("sum", 0.7)):
        (tmp_path / "m.yaml").write_text(f"rig_names: [a, b, c]\nrig_fps: 25\ncombine: {combine}\n"
                                         "channels: {mouthFunnel: [a, b], jawOpen: c}\n")
        clip = import_rig_array(tmp_path / "rig.npy", wav, load_mapping(tmp_path / "m.yaml"))
        assert np.allclose(clip["weights"][:, ARKIT_INDEX["mouthFunnel"]], expected), combine
