"""The animate graph as data: launch arguments -> the nodes to start and their parameter overrides.

Shared by ``launch/animate.launch.py`` (on a ROS 2 install) and ``lsf-ros animate`` (pip-only
machines), so both start the same nodes with the same parameters from the same
``config/animate.yaml``. Needs neither launch nor rclpy, so it is unit-tested on its own.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PACKAGE = "lsf_ros"
AUDIO_SOURCES = ("mic", "file", "tts", "topic")

# argument -> (default, help). Empty means "keep what config/animate.yaml says".
ARGUMENTS: dict[str, tuple[str, str]] = {
    "audio_source": ("mic", "where speech comes from: mic (sound card), file (audio_file), tts (text on say) or topic "
                            "(publish on audio)"),
    "audio_file": ("", "wav/flac/ogg file played when audio_source:=file"),
    "model": ("", "model preset name or .safetensors file (default from config: realtime)"),
    "neutral_mesh": ("", "rig file of the face to animate (default: the built-in avatar)"),
    "rate": ("", "output frames per second, 25..120 (default from config: 30)"),
    "audio_type": ("", "audio message type on the audio topic (default std_msgs/Int16MultiArray)"),
    "sample_rate": ("", "sample rate of the audio topic when the message does not carry one"),
    "retarget_map": ("", "YAML retarget map -> face/joint_commands for servo faces"),
    "rviz": ("false", "true: start RViz with config/animate.rviz"),
    "speaker": ("false", "true: play the audio on the sound card, each sample when its face frame is published"),
    "publish_delay": ("", "s after its stamp at which each face frame goes out, -1 = auto, 0 = when ready "
                          "(default: auto with speaker:=true, so the sound meets a face of constant latency; "
                          "else from config: 0)"),
    "config": ("", "parameter YAML (default: the package's config/animate.yaml)"),
    "namespace": ("", "namespace of every node of the graph (face topics become NAMESPACE/face/*)"),
    "audio_topic": ("audio", "topic the audio is published on / read from, e.g. /audio/audio for "
                             "audio_capture (relative names resolve in the namespace)"),
    "audio_info_topic": ("", "AudioInfo topic (audio_common_msgs AudioData types); default: audio_info next to "
                             "audio_topic (/audio/audio -> /audio/audio_info)"),
}


@dataclass
class NodeSpec:
    executable: str
    name: str
    overrides: dict[str, Any] = field(default_factory=dict)
    remappings: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class GraphPlan:
    nodes: list[NodeSpec]
    config: Path
    rviz: bool
    rviz_config: Path
    namespace: str = ""


def config_dir() -> Path:
    """The installed share/lsf_ros/config, or the source tree's config/ in a development checkout."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        share = Path(get_package_share_directory(PACKAGE)) / "config"
        if (share / "animate.yaml").is_file():
            return share
    except (ImportError, PackageNotFoundError, LookupError, OSError):
        pass
    return Path(__file__).resolve().parents[1] / "config"


def parse_assignments(items: list[str]) -> dict[str, str]:
    """``["rate:=30", "audio_source:=file"]`` -> dict; errors name the bad item and the known names."""
    out = {}
    for item in items:
        name, sep, value = item.partition(":=")
        if not sep or not name:
            raise ValueError(f"argument {item!r} is not name:=value")
        if name not in ARGUMENTS:
            raise ValueError(f"unknown argument {name!r}; known: {', '.join(ARGUMENTS)}")
        out[name] = value
    return out


def _bool(name: str, value: str) -> bool:
    v = value.strip().lower()
    if v in ("true", "1", "yes", "on"):
        return True
    if v in ("false", "0", "no", "off", ""):
        return False
    raise ValueError(f"argument {name} must be true or false, got {value!r}")


def _number(name: str, value: str, cls: type) -> float | int:
    try:
        return cls(float(value)) if cls is int else cls(value)
    except ValueError:
        raise ValueError(f"argument {name} must be a number, got {value!r}") from None


def audio_remappings(audio_topic: str, info_topic: str) -> list[tuple[str, str]]:
    """Remappings of the nodes' ``audio`` and ``audio_info`` topics; the info topic defaults to ``audio_info``
    beside the audio topic (audio_capture publishes ``/audio/audio`` and ``/audio/audio_info``)."""
    audio_topic = audio_topic.strip() or "audio"
    if not info_topic.strip():
        parent, _, _ = audio_topic.rpartition("/")
        info_topic = f"{parent}/audio_info" if parent or audio_topic.startswith("/") else "audio_info"
    for name, value in (("audio_topic", audio_topic), ("audio_info_topic", info_topic)):
        if any(c.isspace() for c in value) or value.endswith("/") or "//" in value:
            raise ValueError(f"argument {name} is not a valid topic name: {value!r}")
    return [(src, dst) for src, dst in (("audio", audio_topic), ("audio_info", info_topic)) if src != dst]


def plan_graph(args: dict[str, str]) -> GraphPlan:
    """Launch arguments (strings, as the launch file receives them) -> the nodes and their overrides."""
    unknown = sorted(set(args) - set(ARGUMENTS))
    if unknown:
        raise ValueError(f"unknown argument(s) {unknown}; known: {', '.join(ARGUMENTS)}")
    a = {k: str(args.get(k, default)) for k, (default, _) in ARGUMENTS.items()}
    source = a["audio_source"]
    if source not in AUDIO_SOURCES:
        raise ValueError(f"argument audio_source must be one of {', '.join(AUDIO_SOURCES)}, got {source!r}")
    cfg_dir = config_dir()
    config = Path(a["config"]).expanduser() if a["config"] else cfg_dir / "animate.yaml"
    if not config.is_file():
        raise ValueError(f"argument config: no such parameter file {config}")

    animator: dict[str, Any] = {}
    source_params: dict[str, Any] = {}
    for key in ("model", "neutral_mesh", "retarget_map"):
        if a[key]:
            animator[key] = a[key]
    if a["rate"]:
        animator["rate"] = _number("rate", a["rate"], float)
    if a["audio_type"]:
        animator["audio_type"] = source_params["audio_type"] = a["audio_type"]
    if a["publish_delay"] or _bool("speaker", a["speaker"]):
        animator["publish_delay"] = _number("publish_delay", a["publish_delay"] or "-1", float)
    if a["sample_rate"]:
        animator["sample_rate"] = source_params["sample_rate"] = _number("sample_rate", a["sample_rate"], int)

    remap = audio_remappings(a["audio_topic"], a["audio_info_topic"])
    nodes = []
    if source == "file":
        if not a["audio_file"]:
            raise ValueError("audio_source:=file needs audio_file:=PATH (a wav/flac/ogg file)")
        if not Path(a["audio_file"]).expanduser().is_file():
            raise ValueError(f"argument audio_file: no such file {a['audio_file']}")
        nodes.append(NodeSpec("file_source", "file_source", {"file": a["audio_file"], **source_params}))
    elif source == "mic":
        nodes.append(NodeSpec("mic_source", "mic_source", dict(source_params)))
    elif source == "tts":
        nodes.append(NodeSpec("tts_source", "tts_source", dict(source_params)))
    nodes.append(NodeSpec("animator", "animator", animator))
    if _bool("speaker", a["speaker"]):
        nodes.append(NodeSpec("speaker", "speaker", {k: v for k, v in source_params.items() if k == "audio_type"}))
    for spec in nodes:   # every node of the graph reads or writes audio (and its info)
        spec.remappings = list(remap)
    return GraphPlan(nodes, config, _bool("rviz", a["rviz"]), cfg_dir / "animate.rviz", a["namespace"].strip())


RVIZ_TOPICS = ("/face/mesh", "/face/neutral")   # the displays of config/animate.rviz


def rviz_remappings(plan: GraphPlan) -> list[tuple[str, str]]:
    """config/animate.rviz shows /face/*; in a namespace the face is on /NAMESPACE/face/*."""
    ns = plan.namespace.strip("/")
    return [(t, f"/{ns}{t}") for t in RVIZ_TOPICS] if ns else []


def package_installed(package: str) -> bool:
    """Whether ``package`` is in the ament index (what launch_ros looks its executables up in)."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_prefix
    except ImportError:
        return False
    try:
        get_package_prefix(package)
    except (PackageNotFoundError, LookupError, ValueError, OSError):   # OSError: no AMENT_PREFIX_PATH at all
        return False
    return True


def check_rviz(plan: GraphPlan, installed: Callable[[str], bool] = package_installed) -> None:
    """``rviz:=true`` without rviz2: an error before anything starts (a launch that had started the animator
    would leave it running, orphaned, when the rviz2 action fails)."""
    if plan.rviz and not installed("rviz2"):
        raise ValueError("argument rviz:=true, but package 'rviz2' is not installed: install it "
                         "(sudo apt install ros-$ROS_DISTRO-rviz2) or launch with rviz:=false")


def exit_error(spec: NodeSpec, returncode: int | None, shutting_down: bool) -> str | None:
    """Why the graph must end with an error when ``spec``'s process exits, or None. Every node of the graph is
    required: a source, animator or speaker that fails at start-up or later leaves a graph that cannot animate.
    A clean exit (a file source that finished) or the exit codes of a shutdown already under way end nothing."""
    if shutting_down or returncode == 0:
        return None
    return (f"{spec.name} ({PACKAGE}/{spec.executable}) exited with code {returncode}; the animate graph cannot "
            f"work without it: stopping every node (its error is printed above)")


def node_parameters(plan: GraphPlan, spec: NodeSpec) -> dict[str, Any]:
    """What a node ends up with: its section of the parameter YAML, then the argument overrides."""
    data = yaml.safe_load(plan.config.read_text()) or {}
    section = data.get(spec.name, data.get(f"/{spec.name}", {})) or {}
    params = dict(section.get("ros__parameters", {}) or {})
    params.update(spec.overrides)
    return params
