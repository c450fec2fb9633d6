"""Training data made here: speech synthesis, forced alignment, procedural ARKit targets, augmentation."""
