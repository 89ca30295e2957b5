"""Step kinds, one module each; ``orchestra.steps.kinds`` is their registry."""
