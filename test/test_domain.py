"""ROS domains reserved per process: two runs on one host never share one (no cross-talk between test runs)."""
from __future__ import annotations

import fcntl
import subprocess
import sys
import tempfile
from pathlib import Path

from lsf_ros.domain import DOMAINS, reserve_domain

HOLD = "from lsf_ros.domain import reserve_domain; import sys; print(reserve_domain(), flush=True); sys.stdin.read()"


def _free(domain: int) -> bool:
    with open(Path(tempfile.gettempdir()) / "lsf_ros_domains" / f"{domain}.lock", "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        fcntl.flock(f, fcntl.LOCK_UN)
        return True


def test_processes_get_different_domains_and_a_dead_holder_frees_its_own():
    """Kills: a pid- or random-derived id (collisions), a lock that is not exclusive or not held, a reservation
    that outlives its process."""
    mine = reserve_domain()
    holders = [subprocess.Popen([sys.executable, "-c", HOLD], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                text=True) for _ in range(3)]
    try:
        theirs = [int(p.stdout.readline()) for p in holders]
        assert len({mine, *theirs}) == 4 and all(d in DOMAINS for d in theirs)
        assert not any(_free(d) for d in theirs)
        assert reserve_domain() not in {mine, *theirs}     # this process again: another free one
    finally:
        for p in holders:
            p.kill()        # no clean-up runs: the kernel drops the lock
            p.wait()
    assert all(_free(d) for d in theirs)
