"""The animate graph plan (launch file and ``lsf-ros animate`` share it), its config files, the launch file."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import yaml

from lsf_ros.graph import (
    ARGUMENTS,
    check_rviz,
    exit_error,
    node_parameters,
    package_installed,
    parse_assignments,
    plan_graph,
    rviz_remappings,
)

REPO = Path(__file__).resolve().parents[1]


def test_default_plan_is_microphone_to_animator_from_the_yaml():
    plan = plan_graph({})
    assert [n.executable for n in plan.nodes] == ["mic_source", "animator"]
    assert plan.config == REPO / "config" / "animate.yaml" and not plan.rviz
    animator = node_parameters(plan, plan.nodes[1])
    assert animator["model"] == "realtime" and animator["rate"] == 30.0


def test_arguments_become_parameter_overrides(speech_wav):
    plan = plan_graph({"audio_source": "file", "audio_file": str(speech_wav), "rate": "60", "model": "my.safetensors",
                       "sample_rate": "22050", "rviz": "true"})
    src, anim = plan.nodes
    assert src.executable == "file_source" and src.overrides == {"file": str(speech_wav), "sample_rate": 22050}
    assert anim.overrides == {"model": "my.safetensors", "rate": 60.0, "sample_rate": 22050}
    assert isinstance(anim.overrides["rate"], float) and plan.rviz
    params = node_parameters(plan, src)
    assert params["sample_rate"] == 22050 and params["chunk"] == 1024   # YAML, then overrides
    topic = plan_graph({"audio_source": "topic"})
    assert [n.executable for n in topic.nodes] == ["animator"]


def test_audio_topic_and_namespace_meet_audio_capture():
    """audio_capture publishes /audio/audio and /audio/audio_info: one argument remaps every node's audio and
    (beside it) audio_info; namespace moves the whole graph. Catches: no such arguments, a remap on some nodes
    only, an info topic that does not follow the audio topic."""
    plan = plan_graph({"audio_source": "tts", "speaker": "true", "audio_topic": "/audio/audio", "namespace": "robot"})
    assert plan.namespace == "robot"
    assert [n.executable for n in plan.nodes] == ["tts_source", "animator", "speaker"]
    for spec in plan.nodes:
        assert spec.remappings == [("audio", "/audio/audio"), ("audio_info", "/audio/audio_info")], spec.name
    plan = plan_graph({"audio_source": "topic", "audio_topic": "mic/audio", "audio_info_topic": "/info"})
    assert plan.nodes[0].remappings == [("audio", "mic/audio"), ("audio_info", "/info")]
    assert plan_graph({"audio_source": "topic", "audio_topic": "/sound"}).nodes[0].remappings == [
        ("audio", "/sound"), ("audio_info", "/audio_info")]
    assert plan_graph({}).nodes[0].remappings == [] and plan_graph({}).namespace == ""


@pytest.mark.parametrize("args,match", [
    ({"audio_source": "radio"}, "audio_source must be one of mic, file, tts, topic"),
    ({"audio_source": "file"}, "needs audio_file"),
    ({"audio_source": "file", "audio_file": "/nonexistent.wav"}, "no such file"),
    ({"rate": "fast"}, "rate must be a number"),
    ({"rviz": "maybe"}, "rviz must be true or false"),
    ({"colour": "red"}, "unknown argument"),
    ({"config": "/nonexistent.yaml"}, "no such parameter file"),
    ({"audio_topic": "/audio/"}, "audio_topic is not a valid topic name"),
])
def test_bad_arguments_are_rejected_with_the_reason(args, match):
    with pytest.raises(ValueError, match=match):
        plan_graph(args)


def test_parse_assignments():
    assert parse_assignments(["rate:=30", "audio_source:=topic"]) == {"rate": "30", "audio_source": "topic"}
    with pytest.raises(ValueError, match="not name:=value"):
        parse_assignments(["rate=30"])
    with pytest.raises(ValueError, match="unknown argument 'speed'"):
        parse_assignments(["speed:=2"])


def test_animate_yaml_matches_the_declared_parameters():
    pytest.importorskip("rclpy", reason="ROS 2 wheels not installed")
    from lsf_ros.animator_node import PARAMS

    data = yaml.safe_load((REPO / "config" / "animate.yaml").read_text())
    params = data["animator"]["ros__parameters"]
    assert set(params) <= set(PARAMS), set(params) - set(PARAMS)
    for name, value in params.items():  # a YAML int where a double is declared fails at node start
        assert type(value) is type(PARAMS[name].default), name
    for node in ("mic_source", "file_source"):
        assert "sample_rate" in data[node]["ros__parameters"]
    rviz = yaml.safe_load((REPO / "config" / "animate.rviz").read_text())
    topics = [d["Topic"]["Value"] for d in rviz["Visualization Manager"]["Displays"] if "Topic" in d]
    assert "/face/mesh" in topics and rviz["Visualization Manager"]["Global Options"]["Fixed Frame"] == "face"


def test_launch_file_declares_every_argument():
    text = (REPO / "launch" / "animate.launch.py").read_text()
    assert "plan_graph" in text and "DeclareLaunchArgument" in text
    assert {"audio_source", "audio_file", "model", "neutral_mesh", "rate", "rviz"} <= set(ARGUMENTS)


needs_launch_ros = pytest.mark.skipif(importlib.util.find_spec("launch_ros") is None,
                                      reason="launch_ros is not importable (not on PyPI; needs a ROS 2 install)")


def _run_launch(arguments: dict[str, str], env: dict, stop_after: float | None, timeout: float):
    """animate.launch.py with ``arguments`` through the real LaunchService, in a child process (stopped with a
    Shutdown after ``stop_after`` s, or left to end by itself)."""
    stop = f", TimerAction(period={stop_after}, actions=[Shutdown()])" if stop_after else ""
    code = (
        "import sys, launch\n"
        "from launch.launch_description_sources import PythonLaunchDescriptionSource\n"
        "from launch.actions import IncludeLaunchDescription, TimerAction, Shutdown\n"
        f"inc = IncludeLaunchDescription(PythonLaunchDescriptionSource({str(REPO / 'launch' / 'animate.launch.py')!r}),"
        f" launch_arguments={arguments!r}.items())\n"
        "ls = launch.LaunchService()\n"
        f"ls.include_launch_description(launch.LaunchDescription([inc{stop}]))\n"
        "sys.exit(ls.run())\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=REPO)


@needs_launch_ros
def test_launch_file_runs(ros_env, speech_wav):
    proc = _run_launch({"audio_source": "file", "audio_file": str(speech_wav)}, ros_env, 25.0, 90)
    out = proc.stdout + proc.stderr
    assert "animating std_msgs/Int16MultiArray" in out, out[-3000:]
    assert "playing" in out and "finished" in out, out[-3000:]
    assert os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"


def test_rviz_without_rviz2_is_an_error_before_anything_starts():
    """rviz:=true where rviz2 is not installed: launch used to start the animator, then fail on rviz2 and leave
    the animator running. The check names the package and what to do. Catches: no check, a check that asks the
    wrong package, one that blocks rviz:=false."""
    asked: list[str] = []

    def installed(pkg):
        asked.append(pkg)
        return False

    with pytest.raises(ValueError, match=r"package 'rviz2' is not installed: install it .*ros-\$ROS_DISTRO-rviz2.*"
                                         r"rviz:=false"):
        check_rviz(plan_graph({"rviz": "true"}), installed)
    assert asked == ["rviz2"]
    check_rviz(plan_graph({"rviz": "false"}), installed)
    check_rviz(plan_graph({"rviz": "true"}), lambda pkg: True)
    assert not package_installed("rviz2_is_not_a_package")
    assert rviz_remappings(plan_graph({"namespace": "robot"})) == [("/face/mesh", "/robot/face/mesh"),
                                                                   ("/face/neutral", "/robot/face/neutral")]


def test_a_failed_node_ends_the_graph_with_an_error():
    """A node that fails at start-up (bad neutral_mesh, no microphone) used to leave the others running and the
    launch exiting 0. Every node of the graph is required: a non-zero exit is an error naming it, unless the
    launch is already shutting down; a clean exit (a file that finished) ends nothing."""
    plan = plan_graph({"audio_source": "tts", "speaker": "true"})
    assert all(exit_error(spec, 1, False) for spec in plan.nodes)
    animator = plan.nodes[1]
    reason = exit_error(animator, 1, shutting_down=False)
    assert reason and reason.startswith("animator (lsf_ros/animator) exited with code 1")
    assert exit_error(animator, 0, False) is None and exit_error(animator, -15, True) is None
    assert "exited with code -11" in exit_error(plan.nodes[0], -11, False)


class _Fake:
    """Records how a launch entity was built."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


def _fake_launch(monkeypatch, values: dict[str, str], built: list) -> types.ModuleType:
    """The launch file loaded against stand-ins of launch / launch_ros (not installable here): enough to call
    its action function and see which actions and exit handlers it returns."""
    class Node(_Fake):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append(self)

    class LaunchConfiguration(_Fake):
        def perform(self, context):
            return values.get(self.args[0], ARGUMENTS[self.args[0]][0])

    mods = {"launch": types.ModuleType("launch"), "launch.actions": types.ModuleType("launch.actions"),
            "launch.event_handlers": types.ModuleType("launch.event_handlers"),
            "launch.substitutions": types.ModuleType("launch.substitutions"),
            "launch_ros": types.ModuleType("launch_ros"), "launch_ros.actions": types.ModuleType("launch_ros.actions")}
    mods["launch"].LaunchDescription = _Fake
    for name in ("DeclareLaunchArgument", "OpaqueFunction", "RegisterEventHandler"):
        setattr(mods["launch.actions"], name, type(name, (_Fake,), {}))
    mods["launch.event_handlers"].OnProcessExit = type("OnProcessExit", (_Fake,), {})
    mods["launch.substitutions"].LaunchConfiguration = LaunchConfiguration
    mods["launch_ros.actions"].Node = Node
    for name, mod in mods.items():
        monkeypatch.setitem(sys.modules, name, mod)
    spec = importlib.util.spec_from_file_location("animate_launch", REPO / "launch" / "animate.launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_launch_file_checks_rviz2_first_and_watches_every_node(monkeypatch, speech_wav):
    """The launch file as ros2 launch runs it (launch and launch_ros are stand-ins: not installable here).
    Catches: a node action returned before the rviz2 check, a node without an exit handler, a handler that does
    not raise (launch then exits 0) on a failed node or that raises on a clean exit or during shutdown."""
    built: list = []
    launch_file = _fake_launch(monkeypatch, {"rviz": "true"}, built)
    monkeypatch.setattr(launch_file, "check_rviz", lambda plan: check_rviz(plan, lambda pkg: False))
    with pytest.raises(ValueError, match="package 'rviz2' is not installed"):
        launch_file._nodes(object())
    assert built == []                                   # nothing started, nothing orphaned

    built.clear()
    launch_file = _fake_launch(monkeypatch, {"audio_source": "file", "audio_file": str(speech_wav),
                                             "audio_topic": "/audio/audio"}, built)
    actions = launch_file._nodes(object())
    nodes = [a for a in actions if type(a).__name__ == "Node"]
    handlers = [a.args[0] for a in actions if type(a).__name__ == "RegisterEventHandler"]
    assert [n.kwargs["executable"] for n in nodes] == ["file_source", "animator"]
    assert [h.kwargs["target_action"] for h in handlers] == nodes
    assert all(("audio", "/audio/audio") in n.kwargs["remappings"] for n in nodes)
    running, stopping = types.SimpleNamespace(is_shutdown=False), types.SimpleNamespace(is_shutdown=True)
    for h in handlers:
        on_exit = h.kwargs["on_exit"]
        with pytest.raises(RuntimeError, match="exited with code 1"):
            on_exit(types.SimpleNamespace(returncode=1), running)
        assert on_exit(types.SimpleNamespace(returncode=0), running) is None
        assert on_exit(types.SimpleNamespace(returncode=-2), stopping) is None


@needs_launch_ros
def test_launch_file_fails_when_a_node_fails(ros_env, tmp_path):
    """On a ROS 2 install: a bad neutral_mesh ends the launch with an error, the other nodes stopped."""
    proc = _run_launch({"audio_source": "tts", "neutral_mesh": str(tmp_path / "missing.obj")}, ros_env, None, 120)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "animator (lsf_ros/animator) exited with code 1" in out, out[-3000:]
