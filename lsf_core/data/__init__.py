"""Training and evaluation data made or imported here.

What lives here: what the corpus is made from (``sources``: sentences, Asterisk recordings), offline
speech synthesis (``tts``), forced alignment (``align``), procedural targets (``visemes``, ``prosody``),
audio augmentation (``augment``), the corpus builder and reader (``dataset``) and the 3DMEAD layout of
the paper preset (``mead``). May import: ``models.base`` (rates and frame counts), ``face`` and the
top-level modules; never runtime, training, evaluation or cli.
"""
