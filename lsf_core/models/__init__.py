"""Speech-to-face networks. ``build_model(preset_or_config)`` and ``load_model(path)`` live in registry."""
