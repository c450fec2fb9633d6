"""``lsf-ros``: the ROS side's command line: ``animate`` (the graph in one process), ``say``, ``demo``, benchmarks.

``lsf-ros animate audio_source:=file audio_file:=speech.wav rate:=30 --record out.npz`` runs the graph
of ``animate.launch.py`` without the launch package; ``lsf-ros demo`` is what ``make demo`` runs;
``lsf-ros say "Hello there"`` speaks through TTS -> face -> synchronised playback;
``lsf-ros bench-latency`` measures chunk-published -> frame-received latency, ``lsf-ros bench-sync`` lip sync.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lsf_core.data import tts
from lsf_ros import bench_latency, demo
from lsf_ros.graph import ARGUMENTS, parse_assignments
from lsf_ros.runner import run_graph


def _animate(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="lsf-ros animate",
        description="Run the animate graph (same arguments and config/animate.yaml as animate.launch.py) in one "
                    "process. Arguments: " + "; ".join(f"{k}:= {h}" for k, (_, h) in ARGUMENTS.items()),
        epilog="example: lsf-ros animate audio_source:=file audio_file:=speech.wav rate:=30 --record out.npz")
    p.add_argument("assignments", nargs="*", metavar="name:=value", help="launch arguments")
    p.add_argument("--record", type=Path, default=None, help="write the received frames to this NPZ")
    p.add_argument("--preview", type=Path, default=None, help="render the received frames to this MP4")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    a = p.parse_args(argv)
    try:
        args = parse_assignments(a.assignments)
        summary = run_graph(args, a.duration, a.record, a.preview)
    except (ValueError, RuntimeError, OSError) as err:
        print(f"lsf-ros animate: {err}", file=sys.stderr)
        return 1
    st, loss = summary["stats"], summary["losses"]
    print(f"  {summary['published_frames']} frames published; RTF {st['rtf']:.3f}, audio dropped "
          f"{loss['dropped_s']:.2f} s ({loss['dropped_chunks']} chunks), lost in transport {loss['lost_s']:.2f} s, "
          f"bad messages {summary['bad_messages']}, time line moves {loss['clock_jumps']}")
    _print_speaker(summary)
    return 0


def _print_speaker(summary: dict) -> None:
    if "speaker" in summary:
        sp = summary["speaker"]
        print(f"  played {sp['played_s']:.2f} s on the sound card, delay {sp['delay_ms']:.0f} ms "
              f"({sp['delay_source']}), {sp['late_s']:.2f} s of audio too late to play, {sp['skipped_s']:.2f} s "
              "skipped by device stalls")


def _say(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="lsf-ros say",
        description="Speak a text as a talking robot: TTS (tts_source) -> face (animator) -> the sound card (speaker), "
                    "each sample played when its face frame is published. Other launch arguments as name:=value.",
        epilog='example: lsf-ros say "Hello there" --voice en-us+f3 --record hello.npz')
    p.add_argument("text", help="what to say")
    p.add_argument("assignments", nargs="*", metavar="name:=value", help="launch arguments (rate:=60, model:=...)")
    p.add_argument("--engine", default=None, choices=sorted(tts.ENGINE_PROGRAMS), help="TTS engine (default espeak)")
    p.add_argument("--voice", default=None, help="engine voice (default en-us; flite: slt, rms, awb, kal16)")
    p.add_argument("--rate", type=float, default=None, help="speaking-rate factor (default 1)")
    p.add_argument("--pitch", type=int, default=None, help="pitch 0..99, espeak-ng only (default 50)")
    p.add_argument("--delay", type=float, default=None,
                   help="s from audio time to the sound card (default: follow the face's measured latency)")
    p.add_argument("--no-speaker", action="store_true", help="animate without playing the sound")
    p.add_argument("--record", type=Path, default=None, help="write the received frames to this NPZ")
    a = p.parse_args(argv)
    from lsf_ros import tts_source

    problem = tts_source.text_problem(a.text, int(tts_source.PARAMS["max_chars"].default))
    if problem:
        print(f"lsf-ros say: {problem}", file=sys.stderr)
        return 2
    chosen = {k: v for k, v in (("engine", a.engine), ("voice", a.voice), ("rate", a.rate), ("pitch", a.pitch))
              if v is not None}
    settings = {k: tts_source.PARAMS[k].default for k in ("engine", "voice", "rate", "pitch")} | chosen
    voice = tts.Voice(settings["engine"], settings["voice"], float(settings["rate"]), int(settings["pitch"]))
    try:
        args = parse_assignments(a.assignments)
        args.update(audio_source="tts", speaker="false" if a.no_speaker else "true")
        tts.check_voice(voice)
        node_params = {"tts_source": chosen, "speaker": {} if a.delay is None else {"delay": float(a.delay)}}
        summary = run_graph(args, None, a.record, params=node_params, speak=a.text)
    except tts.SynthesisError as err:
        print(f"lsf-ros say: {err}", file=sys.stderr)
        return 1
    except (ValueError, RuntimeError, OSError) as err:
        print(f"lsf-ros say: {err}", file=sys.stderr)
        return 1
    print(f"  said {a.text[:60]!r}: {summary['published_frames']} face frames")
    _print_speaker(summary)
    return 0


COMMANDS = {"demo": "animate the bundled clip with the default model and avatar through the ROS graph",
            "animate": "run the animate graph in one process (no launch package needed)",
            "say": "speak a text: TTS -> face -> synchronised playback on the sound card",
            "bench-latency": "measure end-to-end latency, audio chunk published -> face frame received",
            "bench-sync": "measure lip sync on a virtual sound card: sound played vs face frame published"}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print("usage: lsf-ros COMMAND [args]\n\ncommands:")
        for name, text in COMMANDS.items():
            print(f"  {name:14s} {text}")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    if argv[0] == "animate":
        return _animate(argv[1:])
    if argv[0] == "demo":
        return demo.main(argv[1:])
    if argv[0] == "say":
        return _say(argv[1:])
    if argv[0] == "bench-sync":
        from lsf_ros import bench_sync

        return bench_sync.main(argv[1:])
    return bench_latency.main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
