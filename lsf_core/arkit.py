"""The 52 ARKit blendshape names (Apple/Unreal order), the head/eye angle names, and name normalisation.

Rigs in the wild spell the sides either ``eyeBlinkLeft`` or ``eyeBlink_L``; both map to the
canonical ARKit spelling here, so every other module only ever sees canonical names.
"""
from __future__ import annotations

ARKIT_NAMES: tuple[str, ...] = (
    "eyeBlinkLeft", "eyeLookDownLeft", "eyeLookInLeft", "eyeLookOutLeft", "eyeLookUpLeft",
    "eyeSquintLeft", "eyeWideLeft", "eyeBlinkRight", "eyeLookDownRight", "eyeLookInRight",
    "eyeLookOutRight", "eyeLookUpRight", "eyeSquintRight", "eyeWideRight", "jawForward",
    "jawLeft", "jawRight", "jawOpen", "mouthClose", "mouthFunnel", "mouthPucker", "mouthLeft",
    "mouthRight", "mouthSmileLeft", "mouthSmileRight", "mouthFrownLeft", "mouthFrownRight",
    "mouthDimpleLeft", "mouthDimpleRight", "mouthStretchLeft", "mouthStretchRight",
    "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthPressLeft",
    "mouthPressRight", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthUpperUpLeft",
    "mouthUpperUpRight", "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft",
    "browOuterUpRight", "cheekPuff", "cheekSquintLeft", "cheekSquintRight", "noseSneerLeft",
    "noseSneerRight", "tongueOut",
)
ARKIT_INDEX: dict[str, int] = {n: i for i, n in enumerate(ARKIT_NAMES)}

# Head and eye angles beside the blendshapes (radians, about the face's own axes; both eyes turn together):
# yaw > 0 turns towards the face's left, pitch > 0 looks down, roll > 0 tilts the top of the head to its right.
POSE_NAMES: tuple[str, ...] = ("headYaw", "headPitch", "headRoll", "eyeYaw", "eyePitch")
_LOWER = {n.lower(): n for n in ARKIT_NAMES}


def canonical_name(name: str) -> str:
    """Return the canonical ARKit spelling of ``name`` (accepts ``_L``/``_R`` and any case).

    Names that are not ARKit names are returned unchanged, so custom rig shapes survive.
    """
    n = name.strip()
    for suffix, side in (("_L", "Left"), ("_R", "Right"), (".L", "Left"), (".R", "Right"),
                         ("_l", "Left"), ("_r", "Right")):
        if n.endswith(suffix):
            n = n[: -len(suffix)] + side
            break
    return _LOWER.get(n.lower(), name)


def is_arkit(name: str) -> bool:
    return canonical_name(name) in ARKIT_INDEX
