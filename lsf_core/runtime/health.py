"""How a running animator is doing, in one word and one sentence, from its counters (diagnostics of the node)."""
from __future__ import annotations

from collections import deque

OK, WARN = "OK", "WARN"
WARN_HOLD = 5.0   # s a loss or an error keeps the level at WARN after it happened

# counters that only grow, and what one unit of each is: WARN while any of them grows (and WARN_HOLD s after)
EVENTS: dict[str, str] = {
    "lost_s": "s lost in transport", "dropped_s": "s dropped (queue full, late or duplicate)",
    "silenced_s": "s turned into silence", "gap_s": "s of gaps filled with silence",
    "ignored_s": "s from other publishers ignored", "bad_messages": "bad messages",
    "clipped_chunks": "clipped chunks", "errors": "errors (recovered)", "model_resets": "model resets",
    "device_fallbacks": "device fallbacks", "compressed_messages": "compressed (mp3) messages rejected",
    "held_dropped": "messages dropped while holding for an AudioInfo",
}
COMPRESSED = "compressed audio (mp3) rejected: publish raw PCM (coding_format wave)"


class Health:
    """The diagnostics level: WARN while audio is lost, dropped, silenced, rejected or clipped, or errors are
    recovered from, and for ``hold`` s after the last one; OK again after. Slower than real time, compressed
    audio rejected, audio held for an AudioInfo, or more than one publisher on the audio topic is WARN as long as
    it lasts, with the cause named."""

    def __init__(self, hold: float = WARN_HOLD):
        self.hold = hold
        self._prev: dict[str, float] = {}
        self._recent: deque[tuple[float, str, float]] = deque()   # (time, counter, increase)

    def assess(self, values: dict, now: float) -> tuple[str, str]:
        """(level, message) for a diagnostics snapshot taken at ``now`` (monotonic s)."""
        for key in EVENTS:
            if key in values:
                grown = values[key] - self._prev.get(key, 0)
                self._prev[key] = values[key]
                if grown > 0:
                    self._recent.append((now, key, grown))
        while self._recent and now - self._recent[0][0] > self.hold:
            self._recent.popleft()
        if values["rtf"] > 1.0:
            return WARN, f"slower than real time (RTF {values['rtf']:.2f})"
        if any(key == "compressed_messages" for _, key, _ in self._recent):   # named: nothing can move
            return WARN, COMPRESSED
        if values.get("held_messages"):
            return WARN, "holding audio until an AudioInfo gives its rate and channels"
        if values.get("publishers_sending", 1) > 1:
            return WARN, (f"{values['publishers_sending']} publishers sending on the audio topic: following one, "
                          "the others are ignored (see values)")
        if self._recent:
            sums: dict[str, float] = {}
            for _, key, grown in self._recent:
                sums[key] = sums.get(key, 0) + grown
            what = ", ".join(f"{v:.2f} {EVENTS[k]}" if isinstance(v, float) else f"{v} {EVENTS[k]}"
                             for k, v in sums.items())
            return WARN, f"in the last {self.hold:g} s: {what}"
        return OK, "animating" if values["input_chunks_per_s"] else "waiting for audio"
