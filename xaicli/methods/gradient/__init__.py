"""Pixel attributions: gradients of the target logit with respect to the input, one module per method."""
