"""xaicli: batch saliency maps for PyTorch image classifiers.

The package root stays import-light (no torch) so that ``xaicli --help`` answers instantly; the library
API lives in :mod:`xaicli.api` and :mod:`xaicli.methods`.
"""

__version__ = "0.1.0"
