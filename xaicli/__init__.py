"""xaicli: batch saliency maps for PyTorch image classifiers.

The package root stays import-light (no torch) so that ``xaicli --help`` answers instantly; the library
API lives in :mod:`xaicli.engine` (a whole config on tensors) and :mod:`xaicli.methods` (one method on a
model), the command-line use cases in :mod:`xaicli.runs`.
"""

__version__ = "0.1.0"
