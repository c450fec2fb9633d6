"""Judging and measuring models.

What lives here: metrics (``metrics``: vertex errors, blendshape errors, lip sync, latency), the held-out
real-speech evaluation (``heldout``), reports with plots and video (``report``), the sliding-window
study of clip models (``window_study``), the streaming and offline benchmarks (``bench``,
``bench_offline``, ``resources``), ground-truth files for bag evaluation (``truth``) and a virtual sound
card for playback tests and benchmarks (``sound_server``). May import
the packages below it (models, face, runtime, data) and the top-level modules; never training or cli.
"""
