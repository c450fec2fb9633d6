"""An rclpy executor spinning on a background thread, stopped by joining that thread.

A process must not end while a thread is still inside rclpy's C++ code: at interpreter exit Python ends
daemon threads that try to take the GIL back with ``pthread_exit``, whose forced unwind through pybind11's
``noexcept`` GIL guards calls ``std::terminate`` ("terminate called without an active exception", exit
status -6; seen in CI from ``lsf-ros animate`` when ``executor.shutdown`` timed out under load). So
``stop`` shuts the executor down and then waits for the spin thread itself.
"""
from __future__ import annotations

import sys
import threading
from typing import Any


class BackgroundSpin:
    """``executor.spin()`` on a daemon thread from construction until ``stop()``."""

    def __init__(self, executor: Any, name: str = "ros-executor") -> None:
        self.executor = executor
        self.thread = threading.Thread(target=executor.spin, name=name, daemon=True)
        self.thread.start()

    def stop(self, timeout: float = 10.0) -> bool:
        """Shut the executor down (no more callbacks) and join the spin thread within ``timeout`` seconds.
        Returns whether the thread ended; when it did not (a callback stuck that long), says so on stderr."""
        self.executor.shutdown(timeout_sec=timeout)
        self.thread.join(timeout)
        if self.thread.is_alive():
            print(f"{self.thread.name}: the executor's spin did not end within {timeout:g} s of its shutdown",
                  file=sys.stderr, flush=True)
            return False
        return True
