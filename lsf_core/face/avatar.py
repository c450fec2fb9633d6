"""The default avatar: a procedural head made entirely by our code, rigged with the 52 ARKit shapes.

The head is a lofted surface: rows are heights (y), columns are angles around the vertical axis, each
row a superellipse whose half-width and front/back depths follow smooth profiles; facial features
(brow ridge, eye sockets and lids, nose, cheeks, lips, chin) are displacements of the front. The mouth
is a slit (the lip row is duplicated: the upper lip keeps one copy, the lower lip the other) so the
jaw can open onto teeth and a dark mouth cavity. Eyeballs, teeth, the mouth cavity and ears are
separate parts. Coordinates: metres, +y up, +z out of the face, +x towards the avatar's left.

Identity: :data:`IDENTITY_DIM` shape parameters in about [-1, 1] (see :data:`IDENTITY_PARAMS`); every
blendshape is built on the identity's own geometry (landmarks move with the shape), so deltas adapt.
``lsf avatar`` (:mod:`lsf_core.cli.avatar`) writes the rig, an OBJ and preview renders.
"""
from __future__ import annotations

import functools

import numpy as np

from lsf_core.arkit import ARKIT_NAMES
from lsf_core.face import avatar_shape as S
from lsf_core.face.avatar_shape import IDENTITY_DIM, IDENTITY_PARAMS
from lsf_core.face.rig import Rig

_SKIN = (0.86, 0.66, 0.55)
_LIP = (0.74, 0.42, 0.40)
_BROW = (0.28, 0.19, 0.14)
_HAIR = (0.23, 0.16, 0.11)
_SCLERA = (0.93, 0.91, 0.87)
_IRIS = (0.33, 0.42, 0.30)
_PUPIL = (0.04, 0.03, 0.03)
_TEETH = (0.93, 0.90, 0.82)
_MOUTH = (0.32, 0.10, 0.10)


class _Builder:
    """Builds the mesh, colours and blendshapes of one identity."""

    def __init__(self, identity: np.ndarray):
        self.identity = identity.astype(np.float32)
        self.s = S.Shape.from_identity(identity)
        self.parts: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]] = []

    # --- geometry -------------------------------------------------------------------------------
    def head(self) -> None:
        s = self.s
        ys = S.rows(S.Shape.from_identity(np.zeros(IDENTITY_DIM)))  # same rows for every identity
        th, corner = S.columns(s)
        w, df, db, ex = S.profile(ys, s)
        Y, T = np.meshgrid(ys, th, indexing="ij")            # (S.ROWS, S.COLS)
        sn, cs = np.sin(T), np.cos(T)
        e = 2 / ex[:, None]
        x = w[:, None] * np.sign(sn) * np.abs(sn) ** e
        z = np.where(cs >= 0, df[:, None], db[:, None]) * np.sign(cs) * np.abs(cs) ** e
        front = S.ss(0.15, 0.6, cs)
        z = z + front * S.features(x, Y, s)
        Y = Y * s.height
        v = np.stack([x, Y, z], -1).reshape(-1, 3)
        n_grid = len(v)
        # eyes: pull the skin inside each opening behind the eyeball, lids just in front of it
        self.eye_centres, self.eye_radius = [], 0.0118
        flat = v.copy()
        for side in (1.0, -1.0):
            cx, cy = S.eye_frame(s, side)
            cy *= s.height
            i = np.argmin((flat[:, 0] - cx) ** 2 + (flat[:, 1] - cy) ** 2 + 1e3 * (flat[:, 2] < 0))
            centre = np.array([cx, cy, flat[i, 2] - self.eye_radius + 0.0012])
            self.eye_centres.append(centre)
            q, depth_t = S.eye_opening(flat[:, 0], flat[:, 1] / s.height, s, side)
            r2 = (flat[:, 0] - cx) ** 2 + (flat[:, 1] - cy) ** 2
            ball = centre[2] + np.sqrt(np.maximum(self.eye_radius ** 2 - r2, 0))  # eyeball surface z
            lid = ball + 0.0016 + 0.0012 * S.ss(1.0, 1.6, q)              # lids rest on the eyeball
            deep = ball - 0.0010 - 0.006 * depth_t ** 1.5 - 0.002 * (1 - q)  # opening: behind the eyeball
            pull = S.ss(3.2, 1.4, q) * (flat[:, 2] > 0)
            v[:, 2] = np.where(q < 1, deep, v[:, 2] + pull * (lid - v[:, 2]))
        # mouth slit: duplicate the lip-line vertices between the corners; the lower lip uses the copies
        r_m = int(np.argmin(np.abs(ys - S.MOUTH_Y)))
        cols = np.nonzero(np.abs(th) < th[corner] - 1e-6)[0]
        dup = np.arange(n_grid, n_grid + len(cols))
        v = np.concatenate([v, v[r_m * S.COLS + cols]])
        remap = np.arange(S.COLS) + r_m * S.COLS
        lower_row = remap.copy()
        lower_row[cols] = dup
        faces = []
        for r in range(S.ROWS - 1):
            a = np.arange(S.COLS) + r * S.COLS
            b = (np.arange(S.COLS) + 1) % S.COLS + r * S.COLS
            c, d = a + S.COLS, b + S.COLS
            if r == r_m:   # the quads below the lip line hang from the lower-lip copies
                a, b = lower_row, np.roll(lower_row, -1)
            faces.append(np.stack([a, c, b], 1))
            faces.append(np.stack([b, c, d], 1))
        top = len(v)
        bottom = top + 1
        v = np.concatenate([v, [[0, ys[0] * s.height + 0.0008, 0.0]],
                            [[0, ys[-1] * s.height - 0.004, -0.004]]])
        ring0, ring1 = np.arange(S.COLS), np.arange(S.COLS) + (S.ROWS - 1) * S.COLS
        faces.append(np.stack([np.full(S.COLS, top), ring0, np.roll(ring0, -1)], 1))
        faces.append(np.stack([np.full(S.COLS, bottom), np.roll(ring1, -1), ring1], 1))
        faces = np.concatenate(faces)
        self.lip_row = r_m
        self.lower_copies = dup
        self.grid_xy = (v[:, 0].copy(), v[:, 1].copy())
        self.add("head", v, faces, self.head_colors(v))

    def head_colors(self, v: np.ndarray) -> np.ndarray:
        s = self.s
        x, y, z = v[:, 0], v[:, 1] / s.height, v[:, 2]
        ax = np.abs(x)
        col = np.tile(np.array(_SKIN), (len(v), 1))
        # lips
        u = ax / s.mouth_hw
        lip = S.ss(1.02, 0.85, u) * S.ss(S.MOUTH_Y + 0.0095 * s.lip, S.MOUTH_Y + 0.0075 * s.lip, y) \
            * S.ss(S.MOUTH_Y - 0.0115 * s.lip, S.MOUTH_Y - 0.0090 * s.lip, y) * (z > 0.03)
        col = col * (1 - lip[:, None]) + np.array(_LIP) * lip[:, None]
        # cheeks a little warmer
        blush = 0.25 * S.gauss(ax, y, 0.045, -0.025, 0.016, 0.014)
        col = col * (1 - blush[:, None]) + np.array([0.86, 0.55, 0.50]) * blush[:, None]
        # brows: an arch above each eye, thinning to the tail, soft-edged
        t = (ax - 0.012) / 0.048
        arch = s.brow_y + 0.006 * np.sin(np.pi * np.clip(t, 0, 1) ** 0.8) - 0.002
        thick = 0.0050 * (1 - 0.45 * np.clip(t, 0, 1))
        brow = 0.9 * S.ss(1.25, 0.45, np.abs(y - arch) / thick) * S.ss(-0.1, 0.06, t) * S.ss(1.1, 0.85, t) * (z > 0.02)
        col = col * (1 - brow[:, None]) + np.array(_BROW) * brow[:, None]
        # lash lines and the crease between the lips
        for side in (1.0, -1.0):
            q, depth_t = S.eye_opening(x, y, s, side)
            lash = 0.8 * S.ss(1.9, 1.05, q) * (q >= 1) * S.ss(0.55, 0.35, depth_t)
            col = col * (1 - lash[:, None]) + np.array(_BROW) * 0.6 * lash[:, None]
        crease = 0.55 * np.exp(-0.5 * ((y - S.MOUTH_Y) / 0.0012) ** 2) * S.ss(1.05, 0.8, ax / s.mouth_hw) * (z > 0.03)
        col = col * (1 - crease[:, None]) + np.array([0.35, 0.15, 0.14]) * crease[:, None]
        # hair cap: the hairline drops from the forehead to above the ears and the nape
        yaw = np.abs(np.arctan2(x, z))
        hairline = np.interp(yaw, [0, 0.5, 1.2, 1.7, 2.3, np.pi], [0.080, 0.072, 0.045, 0.030, -0.020, -0.045])
        hair = S.ss(hairline - 0.006, hairline + 0.006, y)
        col = col * (1 - hair[:, None]) + np.array(_HAIR) * hair[:, None]
        # nostrils
        tip_y = S.EYE_Y - 0.037 * s.nose_len
        nost = S.gauss(ax, y, 0.0065 * s.nose_w, tip_y - 0.0085, 0.0028, 0.0016)
        col = col * (1 - 0.75 * nost[:, None]) + 0.75 * np.array([0.25, 0.12, 0.10]) * nost[:, None]
        return col

    def eyes(self) -> None:
        # pole at the front so the iris and pupil are rings of vertices
        polar = np.radians([0, 6, 12, 17, 21, 25, 27.5, 30, 36, 48, 65, 85, 110, 140, 165, 180])
        az = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        P, A = np.meshgrid(polar, az, indexing="ij")
        unit = np.stack([np.sin(P) * np.cos(A), np.sin(P) * np.sin(A), np.cos(P)], -1).reshape(-1, 3)
        rows, n_az = len(polar), len(az)
        faces = []
        for r in range(rows - 1):
            a = r * n_az + np.arange(n_az)
            b = r * n_az + (np.arange(n_az) + 1) % n_az
            faces += [np.stack([a, b, a + n_az], 1), np.stack([b, b + n_az, a + n_az], 1)]
        faces = np.concatenate(faces)
        deg = np.degrees(P.reshape(-1))
        col = np.where((deg < 12)[:, None], _PUPIL, np.where((deg < 27.5)[:, None], _IRIS, _SCLERA))
        self.eye_parts = []
        for side, centre in zip((1.0, -1.0), self.eye_centres, strict=True):
            # gaze slightly inward and down so the eyes converge at ~1 m
            look = np.radians(-2.0 * side)
            rot = np.array([[np.cos(look), 0, np.sin(look)], [0, 1, 0], [-np.sin(look), 0, np.cos(look)]])
            v = (unit * self.eye_radius) @ rot.T + centre
            self.eye_parts.append(self.add(f"eye_{'left' if side > 0 else 'right'}", v, faces, col))

    def mouth(self) -> None:
        s = self.s
        hw = s.mouth_hw
        head = self.part_vertices("head")
        line = head[self.lip_row * S.COLS:(self.lip_row + 1) * S.COLS]
        z_front = line[np.abs(line[:, 0]) < 0.004, 2].max()
        # teeth: curved bands behind the lips
        ang = np.linspace(-1.0, 1.0, 21)
        radius = 0.030
        for name, y0, y1 in (("teeth_upper", S.MOUTH_Y + 0.0065, S.MOUTH_Y - 0.0005),
                             ("teeth_lower", S.MOUTH_Y - 0.0015, S.MOUTH_Y - 0.0085)):
            hs = np.array([y0, (y0 + y1) / 2, y1]) * s.height
            A, H = np.meshgrid(ang, hs, indexing="ij")
            depth = z_front - 0.0055 - (0.0 if "upper" in name else 0.0015)
            v = np.stack([radius * np.sin(A) * hw / 0.024, H, depth - radius * (1 - np.cos(A))], -1).reshape(-1, 3)
            n = len(hs)
            f = []
            for i in range(len(ang) - 1):
                for j in range(n - 1):
                    a, b = i * n + j, (i + 1) * n + j
                    f += [[a, a + 1, b], [b, a + 1, b + 1]]
            self.add(name, v, np.array(f), np.tile(_TEETH, (len(v), 1)), facing=np.array([0.0, 0.0, 1.0]))
        # cavity: a dark bowl behind the teeth, open towards the lips
        polar = np.radians(np.linspace(0, 90, 9))
        az = np.linspace(0, 2 * np.pi, 20, endpoint=False)
        P, A = np.meshgrid(polar, az, indexing="ij")
        radii = np.array([hw * 0.95, 0.018, 0.024])
        unit = np.stack([np.sin(P) * np.cos(A), np.sin(P) * np.sin(A), -np.cos(P)], -1).reshape(-1, 3)
        v = unit * radii + np.array([0, S.MOUTH_Y * s.height - 0.004, z_front - 0.014])
        n_az = len(az)
        f = []
        for r in range(len(polar) - 1):
            a = r * n_az + np.arange(n_az)
            b = r * n_az + (np.arange(n_az) + 1) % n_az
            f += [np.stack([a, a + n_az, b], 1), np.stack([b, a + n_az, b + n_az], 1)]
        self.add("mouth_cavity", v, np.concatenate(f), np.tile(_MOUTH, (len(v), 1)), facing=np.array([0.0, 0.0, 1.0]))

    def ears(self) -> None:
        s = self.s
        polar = np.linspace(0, np.pi, 9)
        az = np.linspace(0, 2 * np.pi, 16, endpoint=False)
        P, A = np.meshgrid(polar, az, indexing="ij")
        unit = np.stack([np.sin(P) * np.cos(A), np.sin(P) * np.sin(A), np.cos(P)], -1).reshape(-1, 3)
        n_az = len(az)
        f = []
        for r in range(len(polar) - 1):
            a = r * n_az + np.arange(n_az)
            b = r * n_az + (np.arange(n_az) + 1) % n_az
            f += [np.stack([a, b, a + n_az], 1), np.stack([b, b + n_az, a + n_az], 1)]
        f = np.concatenate(f)
        for side in (1.0, -1.0):
            # a flattened, tilted ellipsoid with a hollow facing outwards-forwards
            e = unit * np.array([0.020, 0.031, 0.0075])
            e[:, 2] -= 0.004 * np.exp(-((e[:, 0] / 0.012) ** 2 + (e[:, 1] / 0.02) ** 2)) * (unit[:, 2] > 0)
            e[:, 1] += 0.0025 * (e[:, 0] / 0.02) ** 2
            rot_y = np.radians(90 - 22) * side                    # ear faces sideways, a bit forwards
            ry = np.array([[np.cos(rot_y), 0, np.sin(rot_y)], [0, 1, 0], [-np.sin(rot_y), 0, np.cos(rot_y)]])
            tilt = np.radians(-12)
            rx = np.array([[1, 0, 0], [0, np.cos(tilt), -np.sin(tilt)], [0, np.sin(tilt), np.cos(tilt)]])
            v = e @ (ry @ rx).T + np.array([side * 0.071 * s.width, 0.004 * s.height, -0.012])
            self.add(f"ear_{'left' if side > 0 else 'right'}", v, f, np.tile(_SKIN, (len(v), 1)))

    # --- assembly -------------------------------------------------------------------------------
    def add(self, name: str, v: np.ndarray, f: np.ndarray, col, facing: np.ndarray | None = None) -> str:
        """Add a part; triangles are wound outwards (closed parts) or towards ``facing`` (open parts)."""
        v, f = np.asarray(v, np.float64), np.asarray(f, np.int64)
        tri = v[f]
        normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        score = normal @ facing if facing is not None else np.einsum("fc,fc->f", tri[:, 0], normal) \
            - normal @ v.mean(0)
        if score.sum() < 0:
            f = f[:, ::-1].copy()
        self.parts.append((name, v, f, np.asarray(col, np.float64)))
        return name

    def part_vertices(self, name: str) -> np.ndarray:
        return next(p[1] for p in self.parts if p[0] == name)

    def assemble(self) -> Rig:
        offset, verts, faces, cols = 0, [], [], []
        self.slices: dict[str, slice] = {}
        for name, v, f, c in self.parts:
            self.slices[name] = slice(offset, offset + len(v))
            verts.append(v)
            faces.append(f + offset)
            cols.append(c)
            offset += len(v)
        self.v = np.concatenate(verts)
        deltas = self.blendshapes()
        return Rig("lsf_default_avatar", self.v, np.concatenate(faces), list(ARKIT_NAMES),
                   np.stack([deltas[n] for n in ARKIT_NAMES]), self.identity, self.regions(),
                   np.clip(np.concatenate(cols), 0, 1))

    # --- rigging --------------------------------------------------------------------------------
    def masks(self) -> dict[str, np.ndarray]:
        s, v = self.s, self.v
        n = len(v)
        x, y, z = v[:, 0], v[:, 1] / s.height, v[:, 2]
        head = np.zeros(n, bool)
        head[self.slices["head"]] = True
        lower_flag = np.zeros(n, bool)
        lower_flag[self.lower_copies] = True
        on_line = np.zeros(n, bool)
        on_line[self.lip_row * S.COLS:(self.lip_row + 1) * S.COLS] = True
        below = (y < S.MOUTH_Y - 1e-6) | lower_flag
        hw = s.mouth_hw
        front = S.ss(-0.01, 0.04, z)
        # jaw: everything under the lip line, fading towards the ears, the throat and the cheeks
        jaw_line = S.MOUTH_Y + 0.030 * S.ss(0.9, 1.8, np.abs(x) / hw)
        jaw = np.where(below & (np.abs(x) < hw), 1.0, S.ss(jaw_line, jaw_line - 0.024, y))
        throat = S.ss(-0.100, -0.122, y) * S.ss(0.068, 0.040, z)
        jaw = jaw * S.ss(-0.135, -0.120, y) * S.ss(-0.03, 0.01, z) * (1 - throat)
        jaw = np.where(head, jaw, 0)
        jaw[self.slices["teeth_lower"]] = 1
        cav = self.slices["mouth_cavity"]
        jaw[cav] = S.ss(S.MOUTH_Y + 0.004, S.MOUTH_Y - 0.015, y[cav])
        u = np.abs(x) / hw
        lips_x = S.ss(1.5, 0.9, u)
        upper_lip = head * (~below) * lips_x * S.ss(S.MOUTH_Y + 0.022, S.MOUTH_Y + 0.004, y) * front
        lower_lip = head * below * lips_x * S.ss(S.MOUTH_Y - 0.026, S.MOUTH_Y - 0.006, y) * front
        corner = {side: head * np.exp(-0.5 * (((x - side * hw) / 0.013) ** 2 + ((y - S.MOUTH_Y) / 0.016) ** 2))
                  * front for side in (1, -1)}
        return {"jaw": jaw, "upper_lip": upper_lip, "lower_lip": lower_lip, "corner_l": corner[1],
                "corner_r": corner[-1], "head": head.astype(float), "front": front, "on_line": on_line}

    def blendshapes(self) -> dict[str, np.ndarray]:
        s, v = self.s, self.v
        m = self.masks()
        self.mask_cache = m
        n = len(v)
        x, y, z = v[:, 0], v[:, 1] / s.height, v[:, 2]
        hw = s.mouth_hw
        zero = np.zeros((n, 3))
        out = {name: zero.copy() for name in ARKIT_NAMES}
        left, right = S.ss(-0.3 * hw, 0.3 * hw, x), S.ss(0.3 * hw, -0.3 * hw, x)
        side_w = {"Left": left, "Right": right}

        def vec(dx=0.0, dy=0.0, dz=0.0):
            return np.stack(np.broadcast_arrays(dx, dy, dz), -1) * np.ones((n, 1))

        # jaw: rotation about the hinge in front of the ears
        hinge = np.array([0.0, -0.002 * s.height, -0.008])
        ang = 0.30
        rot = np.array([[1, 0, 0], [0, np.cos(ang), -np.sin(ang)], [0, np.sin(ang), np.cos(ang)]])
        jaw_move = ((v - hinge) @ rot.T + hinge) - v
        out["jawOpen"] = jaw_move * m["jaw"][:, None]
        lips = m["upper_lip"] + m["lower_lip"]
        out["mouthClose"] = -jaw_move * (m["lower_lip"] * 0.92)[:, None] + vec(dy=-0.002) * m["upper_lip"][:, None]
        out["jawForward"] = vec(dz=0.006) * m["jaw"][:, None]
        out["jawLeft"] = vec(dx=0.007) * m["jaw"][:, None]
        out["jawRight"] = vec(dx=-0.007) * m["jaw"][:, None]
        # lips
        gap = np.clip(np.abs(y - S.MOUTH_Y) / 0.012, 0, 1)
        sign = np.where(y >= S.MOUTH_Y, 1.0, -1.0)
        sign[m["on_line"] & (m["lower_lip"] == 0)] = 1.0
        sign[self.lower_copies] = -1.0
        out["mouthFunnel"] = (vec(-0.25 * x * S.ss(0.5, 1.1, np.abs(x) / hw), 0.0, 0.007)
                              + vec(dy=sign * 0.0045 * (1 - gap) * S.ss(1.0, 0.3, np.abs(x) / hw))) * lips[:, None]
        out["mouthPucker"] = vec(-0.40 * x * S.ss(0.2, 1.0, np.abs(x) / hw), -sign * 0.0015 * (1 - gap),
                                 0.010 * (1 - 0.4 * gap)) * lips[:, None]
        out["mouthLeft"] = vec(dx=0.009) * (lips + 0.5 * (m["corner_l"] + m["corner_r"]))[:, None]
        out["mouthRight"] = vec(dx=-0.009) * (lips + 0.5 * (m["corner_l"] + m["corner_r"]))[:, None]
        out["mouthRollLower"] = vec(0.0, 0.0025, -0.0055) * (m["lower_lip"] * (1 - 0.3 * gap))[:, None]
        out["mouthRollUpper"] = vec(0.0, -0.0025, -0.0055) * (m["upper_lip"] * (1 - 0.3 * gap))[:, None]
        out["mouthShrugLower"] = vec(0.0, 0.0035, 0.003) * (m["lower_lip"] + 0.6 * m["jaw"] * S.ss(
            S.MOUTH_Y - 0.01, S.MOUTH_Y - 0.04, y) * m["head"])[:, None]
        out["mouthShrugUpper"] = vec(0.0, 0.003, 0.0015) * m["upper_lip"][:, None]
        for side, sgn in (("Left", 1.0), ("Right", -1.0)):
            c = m[f"corner_{side[0].lower()}"][:, None]
            sw = side_w[side][:, None]
            out[f"mouthSmile{side}"] = vec(sgn * 0.0075, 0.0085, -0.004) * c \
                + vec(0.0, 0.003, 0.002) * (m["head"] * S.gauss(x, y, sgn * 0.042, -0.03, 0.014, 0.014))[:, None]
            out[f"mouthFrown{side}"] = vec(sgn * 0.002, -0.0075, -0.001) * c
            out[f"mouthStretch{side}"] = vec(sgn * 0.009, -0.003, -0.003) * c \
                + vec(dy=sign * -0.0015) * (lips[:, None] * sw)
            out[f"mouthDimple{side}"] = vec(sgn * 0.003, 0.0, -0.004) * c
            press = np.where(sign > 0, -1.0, 1.0) * 0.0025 * (1 - gap)
            out[f"mouthPress{side}"] = vec(0.0, press, -0.0015) * (lips[:, None] * sw)
            out[f"mouthLowerDown{side}"] = vec(0.0, -0.0065, 0.0015) * (m["lower_lip"][:, None] * sw)
            out[f"mouthUpperUp{side}"] = vec(0.0, 0.0055, 0.0015) * (m["upper_lip"][:, None] * sw)
            cheek = m["head"] * S.gauss(x, y, sgn * 0.045, -0.03, 0.017, 0.02) * m["front"]
            out[f"cheekSquint{side}"] = vec(dy=0.004, dz=0.001) * (m["head"] * S.gauss(
                x, y, sgn * 0.042, -0.008, 0.014, 0.010))[:, None]
            out[f"noseSneer{side}"] = vec(dy=0.004, dz=0.001) * (m["head"] * S.gauss(
                x, y, sgn * 0.013, S.EYE_Y - 0.030, 0.008, 0.010))[:, None]
            out["cheekPuff"] += np.stack([sgn * 0.007 * cheek, 0.0 * cheek, 0.004 * cheek], -1)
        # brows
        bx = np.abs(x)
        brow = m["head"] * S.ss(s.brow_y + 0.035, s.brow_y + 0.004, y) * S.ss(s.brow_y - 0.022, s.brow_y - 0.004, y) \
            * m["front"]
        inner = brow * S.ss(0.034, 0.008, bx)
        out["browInnerUp"] = vec(dy=0.0065, dz=0.0005) * inner[:, None]
        for side, sgn in (("Left", 1.0), ("Right", -1.0)):
            sw = side_w[side]
            out[f"browDown{side}"] = vec(-sgn * 0.002, -0.0055, 0.001) * (brow * sw * S.ss(0.065, 0.03, bx))[:, None]
            out[f"browOuterUp{side}"] = vec(dy=0.0065) * (brow * sw * S.ss(0.018, 0.045, bx))[:, None]
        # eyes: lids close over the eyeball (deeper lid vertices cross it later, so the lid edge descends)
        for side, sgn, cen in (("Left", 1.0, self.eye_centres[0]), ("Right", -1.0, self.eye_centres[1])):
            q, t = S.eye_opening(x, y, s, sgn)
            r2 = (x - cen[0]) ** 2 + (v[:, 1] - cen[1]) ** 2
            ball = cen[2] + np.sqrt(np.maximum(self.eye_radius ** 2 - r2, 0))
            inside = m["head"] * (q < 1)
            close = np.where(inside > 0, ball + 0.0016 - z, 0.0)
            ring = m["head"] * S.ss(2.2, 1.0, q) * (q >= 1) * (y > cen[1] / s.height)
            out[f"eyeBlink{side}"] = vec(dz=close) + vec(dy=-0.0025 * ring, dz=0.0006 * ring)
            out[f"eyeSquint{side}"] = vec(dz=close * (t > 0.7)) + vec(dy=0.0015) * (m["head"] * S.gauss(
                x, y, cen[0], cen[1] / s.height - 0.010, 0.012, 0.005))[:, None]
            out[f"eyeWide{side}"] = vec(dy=0.0022) * (ring * (q < 2.0))[:, None] + vec(dy=0.002) * (
                brow * side_w[side])[:, None]
            eye = self.slices[f"eye_{side.lower()}"]
            for name, axis, a in (("eyeLookUp", 0, -0.35), ("eyeLookDown", 0, 0.35), ("eyeLookIn", 1, -0.45 * sgn),
                                  ("eyeLookOut", 1, 0.45 * sgn)):
                c, sn = np.cos(a), np.sin(a)
                r = np.array([[1, 0, 0], [0, c, -sn], [0, sn, c]]) if axis == 0 else \
                    np.array([[c, 0, sn], [0, 1, 0], [-sn, 0, c]])
                p = v[eye] - cen
                out[f"{name}{side}"][eye] = p @ r.T - p
        return out

    def regions(self) -> dict[str, np.ndarray]:
        m, s, v = self.mask_cache, self.s, self.v
        y = v[:, 1] / s.height
        lips = np.nonzero((m["upper_lip"] + m["lower_lip"] > 0.35) & (np.abs(v[:, 0]) < s.mouth_hw * 1.1))[0]
        upper = np.nonzero((m["head"] > 0) & (y > S.EYE_Y - 0.012) & (y < 0.075) & (m["front"] > 0.5)
                           & (np.abs(v[:, 0]) < 0.06))[0]
        eyes = np.concatenate([np.arange(self.slices[k].start, self.slices[k].stop) for k in ("eye_left", "eye_right")])
        jaw = np.nonzero(m["jaw"] > 0.5)[0]
        return {"lips": lips, "upper_face": upper, "jaw": jaw, "eyes": eyes}


def _identity_vector(identity: np.ndarray | int | None) -> np.ndarray:
    if identity is None or (isinstance(identity, (int, np.integer)) and int(identity) == 0):
        return np.zeros(IDENTITY_DIM, np.float32)
    if isinstance(identity, (int, np.integer)):
        rng = np.random.default_rng(int(identity))
        return np.clip(rng.normal(0.0, 0.5, IDENTITY_DIM), -1, 1).astype(np.float32)
    p = np.asarray(identity, np.float32).reshape(-1)
    if p.shape != (IDENTITY_DIM,):
        raise ValueError(f"identity must have {IDENTITY_DIM} shape coefficients {IDENTITY_PARAMS}, got {p.shape}")
    if not np.isfinite(p).all() or np.abs(p).max() > 3:
        raise ValueError(f"identity coefficients must be finite and within [-3, 3], got {p}")
    return p


def _build(identity: np.ndarray | int | None) -> tuple[Rig, dict[str, slice]]:
    b = _Builder(_identity_vector(identity))
    b.head()
    b.eyes()
    b.mouth()
    b.ears()
    return b.assemble(), b.slices


@functools.lru_cache(maxsize=1)
def part_slices() -> dict[str, slice]:
    """Vertex ranges of the avatar's parts (head, eye_left/right, teeth_upper/lower, mouth_cavity,
    ear_left/right); the same for every identity."""
    return _build(None)[1]


def make_avatar(identity: np.ndarray | int | None = None) -> Rig:
    """Build the avatar. ``None``/0: the default face; an int: a reproducible random identity;
    an array: explicit shape coefficients (:data:`IDENTITY_PARAMS`, about -1..1)."""
    rig = _build(identity)[0]
    if identity is not None and not (isinstance(identity, (int, np.integer)) and int(identity) == 0):
        rig.name = f"lsf_avatar_{identity}" if isinstance(identity, (int, np.integer)) else "lsf_avatar_custom"
    return rig


@functools.lru_cache(maxsize=1)
def _default() -> Rig:
    return make_avatar(None)


def default_rig() -> Rig:
    """The default face (built once per process)."""
    return _default()


# expressions the ``lsf avatar`` previews show

EXPRESSIONS: dict[str, dict[str, float]] = {
    "neutral": {},
    "jaw_open": {"jawOpen": 0.7},
    "smile": {"mouthSmileLeft": 0.9, "mouthSmileRight": 0.9, "cheekSquintLeft": 0.4, "cheekSquintRight": 0.4},
    "oo": {"mouthFunnel": 0.6, "mouthPucker": 0.6, "jawOpen": 0.2},
    "surprise": {"jawOpen": 0.45, "browInnerUp": 0.9, "browOuterUpLeft": 0.8, "browOuterUpRight": 0.8,
                 "eyeWideLeft": 0.6, "eyeWideRight": 0.6},
    "frown_blink": {"browDownLeft": 0.9, "browDownRight": 0.9, "mouthFrownLeft": 0.8, "mouthFrownRight": 0.8,
                    "eyeBlinkLeft": 1.0, "eyeBlinkRight": 1.0},
}
