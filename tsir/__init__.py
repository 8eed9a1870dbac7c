"""TensorSynth."""
