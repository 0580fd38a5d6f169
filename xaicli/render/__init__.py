"""Rendering: colormaps, overlays (on the device, batched) and figures."""
