"""mochapy/layers: every layer's forward and backward, on every backend."""
