"""Which publisher on the audio topic the animator follows, and how much of its audio the transport lost."""
from __future__ import annotations

SOURCE_TIMEOUT = 1.0   # s without a message after which the followed publisher may be replaced


class SourceTracker:
    """One audio stream out of whatever publishes on the topic.

    Policy, for more than one publisher on the audio topic (two microphones on one topic, a bag replayed beside
    a live source): follow one, never splice. The first publisher heard is followed; another one is followed
    only once the followed one has sent nothing for ``timeout`` s (it stopped, or came back under a new
    identity). Messages of the others are ignored and counted (``ignored_messages``, ``ignored_s``): spliced
    streams double the audio rate and corrupt the stamps. ``publishers`` tells how many were heard lately.

    Loss in transport: publication sequence numbers of the followed publisher that skip are messages lost on
    the way (best-effort QoS, a full reader queue, a receiver that was frozen): ``lost_messages``, ``lost_s``
    (each lost message taken to be as long as the one after the gap).

    ``publisher`` is any hashable identity (the DDS writer GID), ``seq`` its message count; either may be None
    (not given by the middleware): without identities every message is followed.
    """

    def __init__(self, timeout: float = SOURCE_TIMEOUT):
        self.timeout = timeout
        self.counts = {"lost_messages": 0, "lost_s": 0.0, "ignored_messages": 0, "ignored_s": 0.0, "switches": 0}
        self.followed = None
        self.new_source = False   # the last accepted message started following a publisher (a new time line)
        self._heard: dict = {}    # publisher -> last arrival (s)
        self._seq: int | None = None

    def accept(self, publisher, seq: int | None, seconds: float, now: float) -> bool:
        """Whether to animate a message of ``seconds`` of audio from ``publisher`` arriving at ``now`` (s)."""
        self.new_source = False
        if publisher is not None:
            followed_at = self._heard.get(self.followed)
            self._heard[publisher] = now
            if len(self._heard) > 64:   # bounded: forget publishers not heard for a while
                self._heard = {p: t for p, t in self._heard.items() if now - t <= self.timeout or p == self.followed}
            if publisher != self.followed:
                if followed_at is not None and now - followed_at <= self.timeout:
                    self.counts["ignored_messages"] += 1
                    self.counts["ignored_s"] += seconds
                    return False
                self.counts["switches"] += self.followed is not None
                self.followed, self._seq, self.new_source = publisher, None, True
        if seq is not None:
            if self._seq is not None and seq > self._seq + 1:
                self.counts["lost_messages"] += seq - self._seq - 1
                self.counts["lost_s"] += (seq - self._seq - 1) * seconds
            self._seq = seq   # a number going back: a restarted publisher without an identity; count from it
        return True

    def publishers(self, now: float) -> int:
        """Publishers heard within the last ``timeout`` s."""
        return sum(1 for t in self._heard.values() if now - t <= self.timeout)
