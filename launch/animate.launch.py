"""Speech -> animated face: ``ros2 launch lsf_ros animate.launch.py audio_source:=mic|file|topic ...``.

Arguments: audio_source, audio_file, model, neutral_mesh, rate, audio_type, sample_rate,
retarget_map, rviz, speaker, publish_delay, config, namespace, audio_topic, audio_info_topic
(``audio_topic:=/audio/audio`` meets audio_capture). Which nodes start and with which parameters is decided by
``lsf_ros.graph.plan_graph`` (unit-tested without launch), from config/animate.yaml plus the
arguments; ``lsf-ros animate`` runs the same plan on machines without the launch package.
"""
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription
from lsf_ros.graph import ARGUMENTS, PACKAGE, plan_graph


def _nodes(context, *args, **kwargs):
    values = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    plan = plan_graph(values)
    actions = [Node(package=PACKAGE, executable=spec.executable, name=spec.name, namespace=plan.namespace,
                    output="screen", parameters=[str(plan.config), spec.overrides], remappings=spec.remappings)
               for spec in plan.nodes]
    if plan.rviz:
        actions.append(Node(package="rviz2", executable="rviz2", name="rviz2",
                            arguments=["-d", str(plan.rviz_config)]))
    return actions


def generate_launch_description():
    declared = [DeclareLaunchArgument(name, default_value=default, description=text)
                for name, (default, text) in ARGUMENTS.items()]
    return LaunchDescription([*declared, OpaqueFunction(function=_nodes)])
