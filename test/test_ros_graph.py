"""The animate graph plan (launch file and ``lsf-ros animate`` share it), its config files, the launch file."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lsf_ros.graph import ARGUMENTS, node_parameters, parse_assignments, plan_graph

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


@pytest.mark.skipif(importlib.util.find_spec("launch_ros") is None,
                    reason="launch_ros is not importable (not on PyPI; needs a ROS 2 install)")
def test_launch_file_runs(ros_env, speech_wav):
    code = (
        "import sys, launch\n"
        "from launch.launch_description_sources import PythonLaunchDescriptionSource\n"
        "from launch.actions import IncludeLaunchDescription, TimerAction, Shutdown\n"
        f"inc = IncludeLaunchDescription(PythonLaunchDescriptionSource({str(REPO / 'launch' / 'animate.launch.py')!r}),"
        f" launch_arguments={{'audio_source': 'file', 'audio_file': {str(speech_wav)!r}}}.items())\n"
        "ls = launch.LaunchService()\n"
        "stop = TimerAction(period=25.0, actions=[Shutdown()])\n"
        "ls.include_launch_description(launch.LaunchDescription([inc, stop]))\n"
        "sys.exit(ls.run())\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=90,
                          env=ros_env, cwd=REPO)
    out = proc.stdout + proc.stderr
    assert "animating std_msgs/Int16MultiArray" in out, out[-3000:]
    assert "playing" in out and "finished" in out, out[-3000:]
    assert os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
