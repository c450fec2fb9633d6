"""A ROS domain of our own: processes on one host that must not hear each other (two test runs, a demo next
to a test) each reserve a different ``ROS_DOMAIN_ID``.

The reservation is an exclusive ``flock`` on ``<tmp>/lsf_ros_domains/<id>.lock`` held for the life of the
process (the kernel drops it when the process ends, however it ends), so no stale reservation survives a
crash. Used by the test suite, ``lsf-ros demo`` and ``lsf-ros bench-latency`` when the user has not set
``ROS_DOMAIN_ID`` (with ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST`` traffic stays on loopback).
"""
from __future__ import annotations

import fcntl
import os
import tempfile
from pathlib import Path

DOMAINS = range(1, 102)   # ids Fast DDS maps to ports without clashes (0 is everyone's default)
_held: dict[int, object] = {}


def reserve_domain() -> int:
    """A domain id no other process on this host holds; held until this process exits."""
    folder = Path(tempfile.gettempdir()) / "lsf_ros_domains"
    folder.mkdir(exist_ok=True)
    start = os.getpid() % len(DOMAINS)
    for k in range(len(DOMAINS)):
        domain = DOMAINS[(start + k) % len(DOMAINS)]
        if domain in _held:
            continue
        handle = open(folder / f"{domain}.lock", "a")  # noqa: SIM115 - held open for the process's life
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        _held[domain] = handle
        return domain
    raise RuntimeError(f"every ROS domain {DOMAINS.start}..{DOMAINS.stop - 1} is held by another process on this "
                       f"host (locks in {folder}); set ROS_DOMAIN_ID yourself")


def default_ros_env() -> str:
    """Loopback discovery and a domain of our own unless the user chose otherwise; returns the domain id."""
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    if "ROS_DOMAIN_ID" not in os.environ:
        os.environ["ROS_DOMAIN_ID"] = str(reserve_domain())
    return os.environ["ROS_DOMAIN_ID"]
