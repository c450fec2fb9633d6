"""The node executables' shutdown safety net: a clean-up that hangs ends the process, with stacks."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("rclpy", reason="ROS 2 wheels not installed (scripts/setup.sh installs them)")

SCRIPT = textwrap.dedent("""
    import threading, time
    from lsf_ros import node_main

    node_main.CLEANUP_GRACE_S = 0.5

    class StuckNode:
        def get_name(self):
            return "stuck"
        def close(self):
            threading.Event().wait()   # a worker that never lets go
        def destroy_node(self):
            pass

    node_main.spin_and_close(StuckNode(), spin=lambda node: None)
    print("not reached")
""")


def test_hung_cleanup_exits_with_stacks(ros_env):
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=ros_env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3, proc.stderr
    assert "stuck: shutdown did not finish" in proc.stderr
    assert "in close" in proc.stderr   # the stack shows where it hung
    assert "not reached" not in proc.stdout
