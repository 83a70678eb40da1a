"""Models: one interface over any local image-text-to-text checkpoint, and the tiny default."""
