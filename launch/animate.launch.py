"""Speech -> animated face: ``ros2 launch lsf_ros animate.launch.py audio_source:=mic|file|topic ...``.

Arguments: audio_source, audio_file, model, neutral_mesh, rate, audio_type, sample_rate,
retarget_map, rviz, speaker, publish_delay, config, namespace, audio_topic, audio_info_topic
(``audio_topic:=/audio/audio`` meets audio_capture). Which nodes start and with which parameters is decided
by ``lsf_ros.graph.plan_graph`` (unit-tested without launch), from config/animate.yaml plus the
arguments; ``lsf-ros animate`` runs the same plan on machines without the launch package. Every argument is
checked before any node starts (``rviz:=true`` without rviz2 included), and a node of the graph that exits
with an error ends the launch with an error (``lsf_ros.graph.exit_error``).
"""
from functools import partial

from launch.actions import DeclareLaunchArgument, OpaqueFunction, RegisterEventHandler
from launch.event_handlers import OnProcessExit
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription
from lsf_ros.graph import ARGUMENTS, PACKAGE, check_rviz, exit_error, plan_graph, rviz_remappings


class NodeFailed(RuntimeError):
    """A required node exited with an error; raised from the exit handler so the launch returns non-zero."""


def _on_exit(spec, event, context):
    reason = exit_error(spec, event.returncode, context.is_shutdown)
    if reason:
        raise NodeFailed(reason)   # launch logs it, shuts every other process down and exits with 1


def _nodes(context, *args, **kwargs):
    values = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    plan = plan_graph(values)
    check_rviz(plan)   # before any action: nothing is left running when it fails
    actions = []
    for spec in plan.nodes:
        node = Node(package=PACKAGE, executable=spec.executable, name=spec.name, namespace=plan.namespace,
                    output="screen", parameters=[str(plan.config), spec.overrides], remappings=spec.remappings)
        actions += [node, RegisterEventHandler(OnProcessExit(target_action=node, on_exit=partial(_on_exit, spec)))]
    if plan.rviz:
        actions.append(Node(package="rviz2", executable="rviz2", name="rviz2", arguments=["-d", str(plan.rviz_config)],
                            remappings=rviz_remappings(plan)))
    return actions


def generate_launch_description():
    declared = [DeclareLaunchArgument(name, default_value=default, description=text)
                for name, (default, text) in ARGUMENTS.items()]
    return LaunchDescription([*declared, OpaqueFunction(function=_nodes)])
