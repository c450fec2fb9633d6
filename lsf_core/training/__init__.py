"""Training the networks of ``lsf_core.models``.

What lives here: the ``realtime`` preset's trainer (``realtime``) and both stages of the ``paper``
preset (``paper``), each driven by a typed config loaded from YAML. May import every package below it:
``models``, ``face``, ``runtime`` (device choice), ``data``, ``evaluation`` (validation metrics) and the
top-level modules; never cli.
"""
