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


def test_background_spin_stop_waits_for_the_spin_thread(ros_ctx, capsys):
    """``lsf-ros animate`` once died with SIGABRT ("terminate called without an active exception") because it
    returned while its executor thread was still inside rclpy. Kills: ``stop`` not joining the spin thread, or
    not saying when a callback outlives its timeout."""
    import threading
    import time

    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from lsf_ros.spinning import BackgroundSpin

    node = rclpy.create_node("lsf_spin_test", context=ros_ctx)
    started, hold = threading.Event(), [0.5]

    def busy() -> None:
        started.set()
        time.sleep(hold[0])

    timer = node.create_timer(0.01, busy)
    spin = BackgroundSpin(SingleThreadedExecutor(context=ros_ctx), "spin-under-test")
    spin.executor.add_node(node)
    assert started.wait(10)
    assert spin.stop(timeout=10.0) and not spin.thread.is_alive()
    assert "did not end" not in capsys.readouterr().err

    hold[0] = 3.0
    started.clear()
    spin = BackgroundSpin(SingleThreadedExecutor(context=ros_ctx), "spin-stuck")
    spin.executor.add_node(node)
    assert started.wait(10)
    assert not spin.stop(timeout=0.3)
    assert "spin-stuck: the executor's spin did not end within 0.3 s" in capsys.readouterr().err
    spin.thread.join(10)
    timer.cancel()
    node.destroy_node()
