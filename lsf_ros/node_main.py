"""The one way our node executables run: spin until done or Ctrl-C/SIGTERM, then close, destroy, shut down."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import rclpy
from rclpy.executors import ExternalShutdownException


def spin_and_close(node: Any, spin: Callable[[Any], None] = rclpy.spin) -> int:
    """Run ``spin(node)``; a KeyboardInterrupt or external shutdown ends it quietly. Always releases the node."""
    try:
        spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.close()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0
