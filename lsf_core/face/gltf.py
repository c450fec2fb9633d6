"""glTF 2.0 files as people export them: every mesh of the default scene in world space, with its morph targets.

:func:`read_gltf` walks the scene graph and returns one :class:`GltfMesh` per mesh instance, its vertices and
morph-target deltas already moved by the node's world transform (or, for a skinned mesh, by its skin in the
rest pose: linear blend skinning with the joints' world matrices and inverse bind matrices), with the
default morph weights applied. Understood: ``.glb`` and ``.gltf`` (external or data-URI buffers), interleaved
and sparse accessors, normalized integer accessors (``KHR_mesh_quantization``), triangle lists, strips and
fans, base colours for previews. Compression is decoded with maintained decoders from PyPI:
``KHR_draco_mesh_compression`` with DracoPy, ``EXT_meshopt_compression`` with meshopt (both in the
``meshes`` extra); texture-only extensions are accepted because only geometry is read. Any other extension
in ``extensionsRequired`` is refused by name. Choosing the face among the meshes is :mod:`lsf_core.face.rig`'s job.
"""
from __future__ import annotations

import base64
import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class GltfError(ValueError):
    """A glTF file that cannot be read; the message names the file and the problem."""


@dataclass
class GltfMesh:
    name: str                    # mesh name, else node name
    vertices: np.ndarray         # (V, 3) float32, world space
    faces: np.ndarray            # (F, 3) int64
    target_names: list[str]      # morph target names as written in the file
    deltas: np.ndarray           # (K, V, 3) float32, world space
    colors: np.ndarray           # (V, 3) float32 base colour in 0..1 (sRGB)
    skinned: bool = False


_COMPONENTS = {5120: np.int8, 5121: np.uint8, 5122: np.int16, 5123: np.uint16, 5125: np.uint32, 5126: np.float32}
_WIDTH = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT2": 4, "MAT3": 9, "MAT4": 16}
_NORMALIZED = {np.int8: 127.0, np.uint8: 255.0, np.int16: 32767.0, np.uint16: 65535.0}
# extensions that change nothing about the geometry we read (materials, textures, lights, metadata)
GEOMETRY_NEUTRAL = ("KHR_texture_basisu", "EXT_texture_webp", "EXT_texture_avif", "KHR_texture_transform",
                    "KHR_materials_", "KHR_lights_punctual", "KHR_xmp_json_ld", "KHR_animation_pointer")
DECODED = {"KHR_mesh_quantization": None, "KHR_draco_mesh_compression": "DracoPy",
           "EXT_meshopt_compression": "meshopt", "KHR_meshopt_compression": "meshopt"}


def read_gltf(path: str | Path) -> list[GltfMesh]:
    """All triangle meshes of the default scene, in world space (see the module docstring)."""
    return _Reader(Path(path)).meshes()


class _Reader:
    def __init__(self, path: Path):
        self.path = path
        self.doc, self.binary = _container(path)
        self._buffers: dict[int, bytes] = {}
        self._views: dict[int, bytes] = {}
        self._check_extensions()

    def fail(self, message: str) -> GltfError:
        return GltfError(f"rig file {self.path}: {message}")

    # ---- extensions -----------------------------------------------------------------------------
    def _check_extensions(self) -> None:
        for ext in self.doc.get("extensionsRequired", []):
            if ext.startswith(GEOMETRY_NEUTRAL):
                continue
            if ext not in DECODED:
                raise self.fail(f"requires the glTF extension {ext}, which this loader does not support (we read "
                                f"{', '.join(DECODED)} and texture/material extensions); re-export without it")
            module = DECODED[ext]
            if module is not None:
                try:
                    __import__(module)
                except ImportError as err:
                    raise self.fail(f"is compressed with {ext}; decoding it needs the Python package {module} "
                                    f"(pip install 'lsf_ros[meshes]' or pip install {module})") from err

    # ---- raw data -------------------------------------------------------------------------------
    def buffer(self, i: int) -> bytes:
        if i not in self._buffers:
            spec = self.doc["buffers"][i]
            uri = spec.get("uri")
            if uri is None:
                ext = spec.get("extensions", {})
                if any(e.get("fallback") for e in ext.values()):
                    data = b""  # a meshopt fallback buffer: only read through compressed views
                elif self.binary is None:
                    raise self.fail(f"buffer {i} has no data")
                else:
                    data = self.binary
            elif uri.startswith("data:"):
                data = base64.b64decode(uri.split(",", 1)[1])
            else:
                data = (self.path.parent / uri).read_bytes()
            self._buffers[i] = data
        return self._buffers[i]

    def view(self, i: int) -> bytes:
        """A bufferView's bytes (decompressed when it uses EXT_meshopt_compression)."""
        if i not in self._views:
            spec = self.doc["bufferViews"][i]
            ext = spec.get("extensions", {})
            comp = ext.get("EXT_meshopt_compression") or ext.get("KHR_meshopt_compression")
            if comp is not None:
                import meshopt

                src = self.buffer(comp["buffer"])
                start = comp.get("byteOffset", 0)
                data = src[start:start + comp["byteLength"]]
                try:
                    rows = meshopt.decode_gltf_buffer(data, comp["count"], comp["byteStride"], comp["mode"],
                                                      comp.get("filter", "NONE"))
                except (ValueError, RuntimeError) as err:
                    raise self.fail(f"bufferView {i}: meshopt data does not decode ({err})") from err
                self._views[i] = np.ascontiguousarray(rows).tobytes()
            else:
                buf = self.buffer(spec["buffer"])
                start = spec.get("byteOffset", 0)
                if start + spec["byteLength"] > len(buf):
                    raise self.fail(f"bufferView {i} runs past the end of its buffer (truncated file?)")
                self._views[i] = buf[start:start + spec["byteLength"]]
        return self._views[i]

    def _strided(self, view: int, offset: int, count: int, dtype: np.dtype, width: int, what: str) -> np.ndarray:
        data = self.view(view)
        stride = self.doc["bufferViews"][view].get("byteStride", 0) or dtype.itemsize * width
        need = offset + stride * (count - 1) + dtype.itemsize * width if count else 0
        if need > len(data):
            raise self.fail(f"{what} runs past the end of its buffer (truncated file?)")
        if count == 0:
            return np.zeros((0, width), dtype)
        rows = np.lib.stride_tricks.as_strided(np.frombuffer(data, np.uint8, offset=offset),
                                               shape=(count, dtype.itemsize * width), strides=(stride, 1))
        return np.ascontiguousarray(rows).view(dtype).reshape(count, width)

    def accessor(self, i: int, as_float: bool = True) -> np.ndarray:
        """Accessor ``i`` as (count, width): float32 (normalized integers scaled) or its integer type."""
        acc = self.doc["accessors"][i]
        ctype = _COMPONENTS.get(acc.get("componentType"))
        width = _WIDTH.get(acc.get("type"))
        if ctype is None or width is None:
            raise self.fail(f"accessor {i} has an unknown type ({acc.get('componentType')}, {acc.get('type')})")
        dtype, count = np.dtype(ctype), int(acc["count"])
        if "bufferView" in acc:
            out = self._strided(acc["bufferView"], acc.get("byteOffset", 0), count, dtype, width, f"accessor {i}")
        else:
            out = np.zeros((count, width), dtype)
        sparse = acc.get("sparse")
        if sparse:
            n = int(sparse["count"])
            ind, val = sparse["indices"], sparse["values"]
            itype = np.dtype(_COMPONENTS[ind["componentType"]])
            idx = self._strided(ind["bufferView"], ind.get("byteOffset", 0), n, itype, 1,
                                f"accessor {i} sparse indices").reshape(-1).astype(np.int64)
            vals = self._strided(val["bufferView"], val.get("byteOffset", 0), n, dtype, width,
                                 f"accessor {i} sparse values")
            if n and (idx.min() < 0 or idx.max() >= count):
                raise self.fail(f"accessor {i}: sparse indices out of range 0..{count - 1}")
            out = out.copy()
            out[idx] = vals
        if not as_float:
            return out
        if acc.get("normalized") and ctype in _NORMALIZED:
            return np.maximum(out.astype(np.float32) / _NORMALIZED[ctype], -1.0)
        return out.astype(np.float32)

    # ---- scene graph ----------------------------------------------------------------------------
    def world_matrices(self) -> dict[int, np.ndarray]:
        """World matrix of every node reachable from the default scene (all root nodes without scenes)."""
        nodes = self.doc.get("nodes", [])
        scenes = self.doc.get("scenes", [])
        if scenes:
            roots = scenes[self.doc.get("scene", 0)].get("nodes", [])
        else:
            children = {c for n in nodes for c in n.get("children", [])}
            roots = [i for i in range(len(nodes)) if i not in children]
        out: dict[int, np.ndarray] = {}
        stack = [(r, np.eye(4)) for r in roots]
        while stack:
            i, parent = stack.pop()
            if i in out:
                raise self.fail(f"node {i} appears twice in the scene graph (a cycle?)")
            out[i] = parent @ _local_matrix(nodes[i])
            stack.extend((c, out[i]) for c in nodes[i].get("children", []))
        return out

    def meshes(self) -> list[GltfMesh]:
        world = self.world_matrices()
        nodes = self.doc.get("nodes", [])
        if not any("mesh" in nodes[i] for i in world):  # no scene places a mesh: take every mesh as it is
            nodes = [{"mesh": k} for k in range(len(self.doc.get("meshes", [])))]
            world = {k: np.eye(4) for k in range(len(nodes))}
        out = []
        for i in sorted(world):
            node = nodes[i]
            if "mesh" not in node:
                continue
            mesh = self.doc["meshes"][node["mesh"]]
            got = self._mesh(mesh, node.get("weights", mesh.get("weights")))
            if got is None:
                continue
            v, f, names, deltas, colors, skin_attrs = got
            if "skin" in node and skin_attrs is not None:
                m = self._skin_matrices(self.doc["skins"][node["skin"]], world, *skin_attrs)
                v = np.einsum("nij,nj->ni", m[:, :3, :3], v) + m[:, :3, 3]
                deltas = np.einsum("nij,knj->kni", m[:, :3, :3], deltas)
            else:
                w = world[i]
                v = v @ w[:3, :3].T + w[:3, 3]
                deltas = deltas @ w[:3, :3].T
            out.append(GltfMesh(mesh.get("name") or node.get("name") or f"mesh{node['mesh']}",
                                v.astype(np.float32), f, names, deltas.astype(np.float32), colors,
                                skinned="skin" in node and skin_attrs is not None))
        if not out:
            raise self.fail("no triangle mesh in the scene")
        return out

    def _mesh(self, mesh: dict, default_weights):
        names = list(mesh.get("extras", {}).get("targetNames", []))
        verts, faces, deltas, colors, joints, weights, base = [], [], [], [], [], [], 0
        for p, prim in enumerate(mesh.get("primitives", [])):
            mode = prim.get("mode", 4)
            if mode not in (4, 5, 6):
                continue
            attrs = prim.get("attributes", {})
            draco = prim.get("extensions", {}).get("KHR_draco_mesh_compression")
            if draco is not None:
                v, idx = self._draco(draco, attrs)
            else:
                if "POSITION" not in attrs:
                    raise self.fail(f"mesh {mesh.get('name')!r} primitive {p} has no POSITION")
                v = self.accessor(attrs["POSITION"])[:, :3]
                idx = self.accessor(prim["indices"], as_float=False).reshape(-1).astype(np.int64) \
                    if "indices" in prim else np.arange(len(v))
            tri = _triangles(idx, mode)
            if tri.size and (tri.min() < 0 or tri.max() >= len(v)):
                raise self.fail(f"mesh {mesh.get('name')!r} primitive {p}: indices out of range 0..{len(v) - 1}")
            targets = prim.get("targets", [])
            if not names:
                names = list(prim.get("extras", {}).get("targetNames", [])) or [f"shape{j}"
                                                                                 for j in range(len(targets))]
            if len(targets) != len(names):
                raise self.fail(f"mesh {mesh.get('name')!r}: {len(targets)} morph targets but {len(names)} names")
            d = np.stack([self.accessor(t["POSITION"])[:, :3] if "POSITION" in t else np.zeros_like(v)
                          for t in targets]) if targets else np.zeros((0, len(v), 3), np.float32)
            if d.shape[1:] != v.shape:
                raise self.fail(f"mesh {mesh.get('name')!r}: morph targets have {d.shape[1]} vertices, "
                                f"POSITION {len(v)}")
            verts.append(v)
            faces.append(tri + base)
            deltas.append(d)
            colors.append(self._colors(prim, len(v)))
            joints.append(self._skin_attr(attrs, "JOINTS", len(v), False))
            weights.append(self._skin_attr(attrs, "WEIGHTS", len(v), True))
            base += len(v)
        if not verts:
            return None
        v, d = np.concatenate(verts), np.concatenate(deltas, axis=1)
        if default_weights and len(default_weights) == len(d):  # the rest shape includes the default morph weights
            v = v + np.tensordot(np.asarray(default_weights, np.float32), d, 1)
        skin = None
        if all(j is not None for j in joints) and all(w is not None for w in weights):
            skin = (np.concatenate(joints), np.concatenate(weights))
        return v, np.concatenate(faces), names, d, np.concatenate(colors), skin

    def _skin_attr(self, attrs: dict, kind: str, n: int, as_float: bool) -> np.ndarray | None:
        sets = [self.accessor(attrs[f"{kind}_{k}"], as_float=as_float) for k in range(4) if f"{kind}_{k}" in attrs]
        if not sets:
            return None
        a = np.concatenate(sets, axis=1)
        if len(a) != n:
            raise self.fail(f"{kind}_0 has {len(a)} rows for {n} vertices")
        return a

    def _skin_matrices(self, skin: dict, world: dict[int, np.ndarray], joints: np.ndarray,
                       weights: np.ndarray) -> np.ndarray:
        jn = skin["joints"]
        ibm = (self.accessor(skin["inverseBindMatrices"]).reshape(-1, 4, 4).transpose(0, 2, 1)
               if "inverseBindMatrices" in skin else np.tile(np.eye(4), (len(jn), 1, 1)))
        if len(ibm) != len(jn):
            raise self.fail(f"skin has {len(jn)} joints but {len(ibm)} inverse bind matrices")
        mats = np.stack([world.get(j, np.eye(4)) for j in jn]) @ ibm
        if joints.size and joints.max() >= len(jn):
            raise self.fail(f"JOINTS_0 names joint {int(joints.max())}, the skin has {len(jn)}")
        w = weights / np.maximum(weights.sum(1, keepdims=True), 1e-12)
        return np.einsum("nk,nkij->nij", w, mats[joints.astype(np.int64)])

    def _colors(self, prim: dict, n: int) -> np.ndarray:
        col = np.ones((n, 3), np.float32)
        if "material" in prim:
            pbr = self.doc.get("materials", [])[prim["material"]].get("pbrMetallicRoughness", {})
            col = col * np.asarray(pbr.get("baseColorFactor", [1, 1, 1, 1])[:3], np.float32)
        if "COLOR_0" in prim.get("attributes", {}):
            c = self.accessor(prim["attributes"]["COLOR_0"])
            if len(c) == n:
                col = col * c[:, :3]
        return np.clip(col, 0, 1) ** (1 / 2.2)  # linear -> sRGB-ish, as the renderer expects

    def _draco(self, ext: dict, attrs: dict) -> tuple[np.ndarray, np.ndarray]:
        import DracoPy

        try:
            mesh = DracoPy.decode(self.view(ext["bufferView"]))
        except Exception as err:  # noqa: BLE001 - DracoPy raises its own exception types
            raise self.fail(f"Draco data does not decode ({type(err).__name__}: {err})") from err
        v = np.asarray(mesh.points, np.float32).reshape(-1, 3)
        if "POSITION" in attrs and int(self.doc["accessors"][attrs["POSITION"]]["count"]) != len(v):
            raise self.fail(f"Draco data has {len(v)} vertices, its POSITION accessor says "
                            f"{self.doc['accessors'][attrs['POSITION']]['count']}")
        return v, np.asarray(mesh.faces, np.int64).reshape(-1)


def _local_matrix(node: dict) -> np.ndarray:
    if "matrix" in node:
        return np.asarray(node["matrix"], np.float64).reshape(4, 4).T   # column-major in the file
    x, y, z, w = node.get("rotation", [0, 0, 0, 1])
    rot = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                    [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                    [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
    m = np.eye(4)
    m[:3, :3] = rot * np.asarray(node.get("scale", [1, 1, 1]), np.float64)
    m[:3, 3] = node.get("translation", [0, 0, 0])
    return m


def _triangles(idx: np.ndarray, mode: int) -> np.ndarray:
    if mode == 4:
        return idx[: len(idx) // 3 * 3].reshape(-1, 3)
    n = max(len(idx) - 2, 0)
    k = np.arange(n)
    if mode == 5:  # strip: every other triangle flipped to keep the winding
        tri = np.stack([idx[k], idx[k + 1 + (k % 2)], idx[k + 2 - (k % 2)]], 1)
    else:          # fan
        tri = np.stack([np.full(n, idx[0] if len(idx) else 0), idx[k + 1], idx[k + 2]], 1)
    return tri.reshape(-1, 3)


def _container(path: Path) -> tuple[dict, bytes | None]:
    try:
        raw = path.read_bytes()
        if path.suffix.lower() == ".gltf":
            return json.loads(raw.decode("utf-8")), None
        if len(raw) < 20 or raw[:4] != b"glTF":
            raise GltfError(f"rig file {path}: not a binary glTF (bad magic or too short)")
        _, _, total = struct.unpack_from("<4sII", raw, 0)
        if total > len(raw):
            raise GltfError(f"rig file {path}: truncated ({len(raw)} of {total} bytes)")
        pos, doc, binary = 12, None, None
        while pos + 8 <= total:
            length, kind = struct.unpack_from("<II", raw, pos)
            chunk = raw[pos + 8: pos + 8 + length]
            if len(chunk) != length:
                raise GltfError(f"rig file {path}: truncated chunk")
            if kind == 0x4E4F534A:
                doc = json.loads(chunk.decode("utf-8"))
            elif kind == 0x004E4942:
                binary = chunk
            pos += 8 + length
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise GltfError(f"rig file {path}: the JSON part does not parse ({err})") from err
    if doc is None:
        raise GltfError(f"rig file {path}: no JSON chunk")
    return doc, binary
