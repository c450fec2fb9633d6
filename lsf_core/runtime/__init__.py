"""Running a model on audio: everything the ROS node and ``lsf infer`` call at run time.

What lives here: the streaming engine (``streaming``: chunks in, timed frames out), its voice-activity
gate (``gate``), device choice (``device``), offline whole-file inference (``infer``), the stamp clock
for audio that carries no stamps (``clock``), which publisher on the audio topic is followed and what the
transport lost of it (``sources``), the diagnostics level (``health``), the queue-and-worker that decouples
audio arrival from inference (``worker``) and synchronised playback of the audio on a sound card
(``playback``).
May import: ``models``, ``face`` and the top-level modules; never data, training, evaluation or cli.
"""
