"""Speech-to-face networks and their weight files.

What lives here: the model interface (``base``), the ``realtime`` streaming network, the published
``paper`` network and its parts (HuBERT/emotion2vec encoders, HIFB predictor, VQ-VAE motion prior), the
log-mel front end, the registry that builds, saves and loads ``.safetensors`` model files (``registry``),
and the converter for the authors' released checkpoints (``release``). May import: ``lsf_core.arkit``,
``audio``, ``config``, ``safe_pickle``, torch and transformers; nothing else of lsf_core.
"""
