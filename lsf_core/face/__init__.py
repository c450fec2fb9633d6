"""Faces: what the motion is shown on.

What lives here: face rigs (a neutral mesh plus named blendshape deltas) and their file formats
(``rig``), the procedural default avatar (``avatar``, ``avatar_shape``), the FLAME head model
(``flame``), blendshape -> robot joint retargeting (``retarget``) and the headless renderer
(``render``). May import: ``lsf_core.arkit``, ``audio``, ``config``, ``safe_pickle``; never models,
runtime or anything above them.
"""
