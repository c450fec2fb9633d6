"""How a running animator is doing, in one word and one sentence, from its counters (diagnostics of the node)."""
from __future__ import annotations

OK, WARN = "OK", "WARN"


def assess(values: dict) -> tuple[str, str]:
    """(level, message) for a diagnostics snapshot: WARN when slower than real time, when errors were
    recovered from, or when audio was dropped, rejected or clipped; OK otherwise."""
    if values["rtf"] > 1.0:
        return WARN, f"slower than real time (RTF {values['rtf']:.2f})"
    if values["errors"] or values["model_resets"] or values["device_fallbacks"]:
        return WARN, "recovered from errors (see values)"
    if values.get("compressed_messages"):
        return WARN, "compressed audio (mp3) rejected: publish raw PCM (coding_format wave)"
    if values.get("held_messages"):
        return WARN, "holding audio until an AudioInfo gives its rate and channels"
    if values["dropped_chunks"] or values["bad_messages"] or values["clipped_chunks"] or values.get("held_dropped"):
        return WARN, "audio dropped, rejected or clipped (see values)"
    return OK, "animating" if values["input_chunks_per_s"] else "waiting for audio"
