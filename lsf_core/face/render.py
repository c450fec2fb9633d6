"""Headless rendering of face meshes to PNG frames and MP4 (with audio).

The rasteriser is our own, in numpy: no OpenGL, no display, same pixels on every machine. Triangles
are binned by screen size and tested against all pixels of their bounding box at once; a depth buffer
(``np.minimum.at``) keeps the nearest; normals and albedo are interpolated per pixel and shaded with a
key/fill/rim light set, wrapped diffuse for a skin-like falloff and a soft specular. Rendering happens
at ``supersample`` times the size and is box-filtered down (anti-aliasing). MP4s are encoded by ffmpeg.
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from lsf_core.face.avatar import default_rig
from lsf_core.face.head_pose import posed_vertices

SKIN = np.array([0.80, 0.60, 0.50], np.float32)
VIEWS = {"front": 0.0, "three_quarter": 35.0, "profile": 90.0}  # yaw of the head in degrees (turns to its left)
_BINS = (2, 4, 8, 16, 32, 64)


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals, (V, 3)."""
    v = vertices[faces]
    fn = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
    n = np.zeros_like(vertices)
    for k in range(3):
        for c in range(3):
            n[:, c] += np.bincount(faces[:, k], fn[:, c], minlength=len(vertices))
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)


def _camera(view: str | float) -> np.ndarray:
    yaw = VIEWS[view] if isinstance(view, str) else float(view)
    if isinstance(view, str) and view not in VIEWS:
        raise ValueError(f"view must be one of {sorted(VIEWS)} or a yaw angle, got {view!r}")
    a, p = np.radians(yaw), np.radians(-6.0)  # slight look-down pitch
    ry = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    return (rx @ ry).astype(np.float32)


def frame_bounds(vertices: np.ndarray) -> tuple[np.ndarray, float]:
    """Centre and half-extent that frame a mesh (or a whole sequence of it) in every view."""
    v = np.asarray(vertices, np.float32).reshape(-1, 3)
    lo, hi = v.min(0), v.max(0)
    return (lo + hi) / 2, float(np.max(hi - lo)) / 2 * 1.12


def render_mesh(vertices: np.ndarray, faces: np.ndarray, size: int = 480, view: str | float = "front",
                colors: np.ndarray | None = None, bounds: tuple[np.ndarray, float] | None = None,
                supersample: int = 2) -> np.ndarray:
    """One mesh -> an (size, size, 3) uint8 image. ``colors``: per-vertex albedo (V, 3) in 0..1."""
    vertices = np.asarray(vertices, np.float32)
    faces = np.asarray(faces, np.int64)
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise ValueError(f"vertices must be (V, 3), got {vertices.shape}")
    if faces.ndim != 2 or faces.shape[1] != 3 or (faces.size and faces.max() >= len(vertices)):
        raise ValueError(f"faces must be (F, 3) indices into {len(vertices)} vertices, got shape {faces.shape}")
    if colors is not None and np.shape(colors) != vertices.shape:
        raise ValueError(f"colors must be (V, 3) like the vertices, got {np.shape(colors)}")
    n = size * supersample
    center, half = bounds if bounds is not None else frame_bounds(vertices)
    rot = _camera(view)
    cam = (vertices - center) @ rot.T                 # camera looks down -z, +y up
    normals = vertex_normals(vertices, faces) @ rot.T
    scale = n / (2 * half)
    px = (cam[:, 0] * scale + n / 2).astype(np.float32)
    py = (n / 2 - cam[:, 1] * scale).astype(np.float32)
    depth = -cam[:, 2]

    face_id, pix, bary = _rasterize(px, py, depth, faces, n, _winding(vertices, faces))
    albedo = np.broadcast_to(SKIN, vertices.shape) if colors is None else np.asarray(colors, np.float32)
    image = _background(n)
    if face_id.size:
        tri = faces[face_id]
        nrm = np.einsum("pk,pkc->pc", bary, normals[tri])
        nrm /= np.maximum(np.linalg.norm(nrm, axis=1, keepdims=True), 1e-12)
        nrm[nrm[:, 2] < 0] *= -1                      # two-sided: inner surfaces face the camera
        col = np.einsum("pk,pkc->pc", bary, albedo[tri])
        image.reshape(-1, 3)[pix] = _shade(nrm, col)
    if supersample > 1:
        image = image.reshape(size, supersample, size, supersample, 3).mean((1, 3))
    return (np.clip(image, 0, 1) ** (1 / 2.2) * 255 + 0.5).astype(np.uint8)


def _winding(vertices: np.ndarray, faces: np.ndarray) -> int:
    """Screen winding of front faces: +1 or -1 from the sign of the mesh's enclosed volume (0: do not cull)."""
    v = vertices[faces].astype(np.float64)
    vol = np.einsum("fc,fc->f", v[:, 0], np.cross(v[:, 1], v[:, 2])).sum()
    scale = np.ptp(vertices, 0).prod()
    return 0 if abs(vol) < 1e-3 * scale else (-1 if vol > 0 else 1)


def _background(n: int) -> np.ndarray:
    g = np.linspace(0.16, 0.05, n, dtype=np.float32)[:, None, None]
    return np.broadcast_to(g * np.array([0.8, 0.9, 1.0], np.float32), (n, n, 3)).copy()


def _rasterize(px, py, depth, faces, n, cull):
    """-> face index, flat pixel index and barycentric weights of every visible pixel.

    ``cull``: +1/-1 keeps triangles of that screen winding (back faces dropped), 0 keeps all.
    """
    x, y, z = px[faces], py[faces], depth[faces]      # (F, 3)
    x0, x1 = np.floor(x.min(1)), np.ceil(x.max(1))
    y0, y1 = np.floor(y.min(1)), np.ceil(y.max(1))
    area = (x[:, 1] - x[:, 0]) * (y[:, 2] - y[:, 0]) - (x[:, 2] - x[:, 0]) * (y[:, 1] - y[:, 0])
    ok = (np.abs(area) > 1e-9) & (x1 >= 0) & (y1 >= 0) & (x0 < n) & (y0 < n)
    if cull:
        ok &= area * cull > 0
    sel = np.nonzero(ok)[0]
    x, y, z, x0, y0, area = x[sel], y[sel], z[sel], x0[sel], y0[sel], area[sel]
    inv = 1.0 / area
    # barycentric weight k as a linear function of the pixel centre: w_k = a_k * dx + b_k * dy + c_k
    coef = []
    for i, j in ((1, 2), (2, 0)):
        a = (y[:, i] - y[:, j]) * inv
        b = (x[:, j] - x[:, i]) * inv
        sx, sy = x0 + 0.5, y0 + 0.5
        c = ((x[:, i] - sx) * (y[:, j] - sy) - (x[:, j] - sx) * (y[:, i] - sy)) * inv
        coef.append((a, b, c))
    bw = np.searchsorted(_BINS, x1[sel] - x0 + 1)
    bh = np.searchsorted(_BINS, y1[sel] - y0 + 1)
    big = max(_BINS[-1], int(max((x1[sel] - x0).max(initial=0), (y1[sel] - y0).max(initial=0))) + 1)
    sizes = (*_BINS, big)
    fids, pixs, bars, deps = [], [], [], []
    for key in np.unique(bw * 16 + bh):
        w_bin, h_bin = sizes[key // 16], sizes[key % 16]
        grp = np.nonzero((bw * 16 + bh) == key)[0]
        dy, dx = np.mgrid[0:h_bin, 0:w_bin].astype(np.float32)
        dx, dy = dx.reshape(1, -1), dy.reshape(1, -1)
        for chunk in np.array_split(grp, max(1, grp.size * w_bin * h_bin // 1_000_000)):
            (a0, b0, c0), (a1, b1, c1) = ((a[chunk, None], b[chunk, None], c[chunk, None]) for a, b, c in coef)
            w0 = a0 * dx + b0 * dy + c0
            w1 = a1 * dx + b1 * dy + c1
            w2 = 1.0 - w0 - w1
            inside = (w0 >= 0) & (w1 >= 0) & (w2 >= 0)
            r, k = np.nonzero(inside)
            cx = x0[chunk[r]].astype(np.int64) + dx[0, k].astype(np.int64)
            cy = y0[chunk[r]].astype(np.int64) + dy[0, k].astype(np.int64)
            on = (cx >= 0) & (cy >= 0) & (cx < n) & (cy < n)
            r, k, cx, cy = r[on], k[on], cx[on], cy[on]
            w = np.stack([w0[r, k], w1[r, k], w2[r, k]], 1)
            fids.append(sel[chunk[r]])
            pixs.append(cy * n + cx)
            bars.append(w)
            deps.append((w * z[chunk[r]]).sum(1))
    if not fids:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 3), np.float32)
    fid, pix, bary, dep = (np.concatenate(a) for a in (fids, pixs, bars, deps))
    zbuf = np.full(n * n, np.inf, np.float32)
    np.minimum.at(zbuf, pix, dep)
    win = dep <= zbuf[pix]
    pix, first = np.unique(pix[win], return_index=True)
    return fid[win][first], pix, bary[win][first].astype(np.float32)


_LIGHTS = [  # direction towards the light (camera space), colour
    (np.array([-0.45, 0.55, 0.70], np.float32), np.array([1.00, 0.95, 0.88], np.float32) * 0.95),
    (np.array([0.65, 0.10, 0.60], np.float32), np.array([0.80, 0.85, 1.00], np.float32) * 0.35),
    (np.array([0.10, 0.30, -0.90], np.float32), np.array([1.00, 1.00, 1.00], np.float32) * 0.45),
]
_VIEW = np.array([0.0, 0.0, 1.0], np.float32)
_WARM = np.array([0.0, -0.08, -0.12], np.float32)


def _shade(n: np.ndarray, albedo: np.ndarray) -> np.ndarray:
    albedo = albedo ** 2.2                              # sRGB-ish albedo -> linear
    out = albedo * (0.16 + 0.10 * n[:, 1:2])            # sky/ground ambient
    for d, c in _LIGHTS:
        d = d / np.linalg.norm(d)
        wrap = np.clip((n @ d + 0.3) / 1.3, 0, 1)[:, None]  # wrapped diffuse: light bleeds past the terminator
        diffuse = wrap * c * (1.0 + _WARM * (1 - wrap))        # warmer towards the shadow edge
        h = (d + _VIEW) / np.linalg.norm(d + _VIEW)
        spec = (np.clip(n @ h, 0, 1) ** 40)[:, None] * 0.10 * c
        out = out + albedo * diffuse + spec
    rim = (np.clip(1 - n[:, 2], 0, 1) ** 3)[:, None] * 0.12
    return (out + rim * albedo).astype(np.float32)


def render_frames(vertex_seq: np.ndarray, faces: np.ndarray, size: int = 480, view: str | float = "front",
                  colors: np.ndarray | None = None, progress: bool = True, supersample: int = 1):
    """Yield one uint8 image per frame of a (T, V, 3) sequence, framed on the whole sequence."""
    from tqdm import tqdm

    seq = np.asarray(vertex_seq, np.float32)
    if seq.ndim != 3 or seq.shape[2] != 3:
        raise ValueError(f"vertex_seq must be (T, V, 3), got {seq.shape}")
    bounds = frame_bounds(seq[:: max(1, len(seq) // 50)])
    for v in tqdm(seq, desc="render", unit="frame", disable=not progress):
        yield render_mesh(v, faces, size, view, colors, bounds, supersample)


def render_video(vertex_seq: np.ndarray, faces: np.ndarray, fps: float, out_path: str | Path,
                 audio_path: str | Path | None = None, size: int = 480, view: str | float = "front",
                 colors: np.ndarray | None = None, supersample: int = 1) -> Path:
    """(T, V, 3) vertices -> an H.264 MP4 (with the audio muxed in when given), or PNG frames when
    ``out_path`` has no ``.mp4``/``.mov``/``.mkv`` suffix (then it is a folder)."""
    import imageio.v3 as iio

    out = Path(out_path)
    if fps <= 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    if audio_path is not None and not Path(audio_path).is_file():
        raise FileNotFoundError(f"audio file {audio_path} does not exist")
    frames = render_frames(vertex_seq, faces, size, view, colors, supersample=supersample)
    if out.suffix.lower() not in (".mp4", ".mov", ".mkv"):
        out.mkdir(parents=True, exist_ok=True)
        for i, img in enumerate(frames):
            iio.imwrite(out / f"frame_{i:05d}.png", img)
        return out
    return encode_mp4(frames, size, size, fps, out, audio_path)


def render_side_by_side(panels: list[tuple[str, np.ndarray]], faces: np.ndarray, fps: float, out_path: str | Path,
                        audio_path: str | Path | None = None, size: int = 320, colors: np.ndarray | None = None,
                        supersample: int = 1) -> Path:
    """Several (T, V, 3) sequences of one mesh, each under its label, side by side in one MP4 (framed alike, so
    a larger motion looks larger), with the audio muxed in when given."""
    from PIL import Image, ImageDraw, ImageFont

    if not panels:
        raise ValueError("no panels to render")
    seqs = [np.asarray(v, np.float32) for _, v in panels]
    n = min(len(v) for v in seqs)
    bounds = frame_bounds(np.concatenate([v[:n:max(1, n // 50)] for v in seqs]))
    label_h = max(14, size // 12)
    font = ImageFont.load_default(size=label_h - 6)

    def frames():
        from tqdm import tqdm

        for t in tqdm(range(n), desc="render side by side", unit="frame"):
            row = []
            for (label, _), seq in zip(panels, seqs):
                img = Image.new("RGB", (size, size + label_h), (24, 24, 28))
                img.paste(Image.fromarray(render_mesh(seq[t], faces, size, "front", colors, bounds, supersample)),
                          (0, label_h))
                ImageDraw.Draw(img).text((6, 2), label, fill=(235, 235, 235), font=font)
                row.append(np.asarray(img))
            yield np.concatenate(row, axis=1)

    return encode_mp4(frames(), size * len(panels), size + label_h, fps, out_path, audio_path)


def encode_mp4(frames, width: int, height: int, fps: float, out_path: str | Path,
               audio_path: str | Path | None = None) -> Path:
    """uint8 (height, width, 3) images -> an H.264 MP4 by ffmpeg, with the audio muxed in when given."""
    out = Path(out_path)
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise RuntimeError("ffmpeg is not installed (scripts/setup.sh installs it); cannot write MP4")
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [ffmpeg, "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
           "-r", f"{fps:g}", "-i", "-"]
    if audio_path is not None:
        cmd += ["-i", str(audio_path), "-c:a", "aac", "-b:a", "128k", "-shortest"]
    cmd += ["-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "20", "-movflags", "+faststart", str(out)]
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=err)
        try:
            for img in frames:
                proc.stdin.write(img.tobytes())
        except BrokenPipeError:
            pass
        finally:
            proc.stdin.close()
            rc = proc.wait()
        if rc != 0:
            err.seek(0)
            raise RuntimeError(f"ffmpeg failed writing {out}: {err.read().decode(errors='replace').strip()}")
    return out


def load_animation(npz_path: str | Path) -> dict[str, np.ndarray]:
    """Read an animation NPZ (``lsf infer`` layout) -> absolute vertices (T, V, 3), faces, fps, colors."""
    path = Path(npz_path)
    if not path.is_file():
        raise FileNotFoundError(f"animation file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except Exception as e:
        raise ValueError(f"animation file {path}: not a readable NPZ ({type(e).__name__}: {e})") from e
    missing = [k for k in ("fps", "vertex_offsets", "faces") if k not in data]
    if missing:
        raise ValueError(f"animation file {path}: missing arrays {missing}")
    offsets = data["vertex_offsets"]
    if offsets.ndim != 3 or offsets.shape[2] != 3:
        raise ValueError(f"animation file {path}: vertex_offsets must be (T, V, 3), got {offsets.shape}")
    colors = None
    if "neutral" in data:
        neutral = data["neutral"]
    else:
        rig = default_rig()
        if rig.num_vertices != offsets.shape[1]:
            raise ValueError(f"animation file {path}: no 'neutral' array and its {offsets.shape[1]} vertices do not "
                             f"match the default avatar ({rig.num_vertices}); add the neutral mesh")
        neutral = rig.vertices
    if neutral.shape != offsets.shape[1:]:
        raise ValueError(f"animation file {path}: neutral {neutral.shape} does not match offsets {offsets.shape[1:]}")
    rig = default_rig()
    if rig.num_vertices == len(neutral) and np.array_equal(rig.faces, data["faces"]):
        colors = rig.colors
    vertices = neutral[None] + offsets
    pose = data.get("pose")
    if pose is not None and "head_pivot" in data and pose.shape == (len(offsets), 5) and np.any(pose[:, :3]):
        vertices = posed_vertices(vertices, pose[:, :3], data["head_pivot"])   # the head turns in the picture
    return {"vertices": vertices, "faces": data["faces"], "fps": float(data["fps"]), "colors": colors}


def render_npz(npz_path: str | Path, out_path: str | Path, audio_path: str | Path | None = None,
               size: int = 480, view: str | float = "front") -> Path:
    """An animation NPZ (+ optional audio) -> MP4 (or a folder of PNG frames)."""
    anim = load_animation(npz_path)
    return render_video(anim["vertices"], anim["faces"], anim["fps"], out_path, audio_path, size, view,
                        anim["colors"])
