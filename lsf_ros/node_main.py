"""The one way our node executables run: spin until done or Ctrl-C/SIGTERM, then close, destroy, shut down.

Two safety nets for a process that must never linger: ``kill -USR1 <pid>`` prints every thread's stack
(to see where a node is stuck), and a clean-up that has not finished ``CLEANUP_GRACE_S`` seconds after
the spin ended ends the process with exit status 3 and a message saying so (or, when the clean-up is stuck
holding the GIL, faulthandler's GIL-free timer ends it 5 s later with status 1 and every thread's stack).
"""
from __future__ import annotations

import faulthandler
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

import rclpy
from rclpy.executors import ExternalShutdownException

CLEANUP_GRACE_S = 10.0


def _cleanup_overdue(name: str) -> None:
    print(f"{name}: shutdown did not finish within {CLEANUP_GRACE_S:.0f} s; stacks follow, then exit 3",
          file=sys.stderr, flush=True)
    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
    os._exit(3)


def start_and_spin(make: Callable[[], Any], errors: tuple[type[BaseException], ...], args: list[str] | None = None,
                   prefix: str = "") -> int:
    """A node executable's main: init rclpy, build the node (one of ``errors``: its message on stderr, after
    ``prefix``, and exit status 1), then ``spin_and_close``."""
    rclpy.init(args=args)
    try:
        node = make()
    except errors as err:
        print(f"{prefix}{err}", file=sys.stderr)
        rclpy.try_shutdown()
        return 1
    return spin_and_close(node)


def spin_and_close(node: Any, spin: Callable[[Any], None] = rclpy.spin) -> int:
    """Run ``spin(node)``; a KeyboardInterrupt or external shutdown ends it quietly. Always releases the node."""
    if hasattr(signal, "SIGUSR1"):
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    name = node.get_name()
    try:
        spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        watchdog = threading.Timer(CLEANUP_GRACE_S, _cleanup_overdue, args=(name,))
        watchdog.daemon = True
        watchdog.start()
        # the timer above needs the GIL; a clean-up stuck in C code holding it (seen once in rclpy's destroy_node)
        # starves it, so faulthandler's own thread, which needs no GIL, dumps the stacks and exits (status 1) 5 s later
        faulthandler.dump_traceback_later(CLEANUP_GRACE_S + 5.0, exit=True)
        node.close()
        node.destroy_node()
        rclpy.try_shutdown()
        faulthandler.cancel_dump_traceback_later()
        watchdog.cancel()
    return 0
