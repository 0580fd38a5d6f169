"""Which rows the benchmark has, and what each compares; importable without torch (``--help`` uses it).

The method rows are not listed here: every method in xaicli's registry
(:func:`xaicli.methods.available_methods`) gets one, in the registry's order. A method whose name a
reference library implements (:data:`benchmarks.references.IMPLEMENTED_BY`) is timed against it; any
other method still gets a row, with xaicli's rate and the reference columns empty. What is written here
by hand is only data about methods: the options that align xaicli with the reference and the speed-up
each row must reach.
"""

from __future__ import annotations

EXTRA_ROWS = ("forward", "topk", "e2e")
"""Rows that are not one method: a plain forward pass, Grad-CAM top-3 vs top-1, the end-to-end run."""

METRIC_ROWS = ("deletion", "road", "mprt")
"""The evaluation metrics against their references (:mod:`benchmarks.metric_rows`): deletion + insertion
vs the RISE authors' loop and Quantus' PixelFlipping, ROAD vs pytorch-grad-cam, MPRT vs Quantus. Not in
the default run (``xaicli bench`` times the methods); ask for them: ``xaicli bench -m deletion``."""

ALIGNMENT: dict[str, dict] = {
    "gradcam_pp": {"alpha_norm": False},
    "scorecam": {"weights": "channel_softmax", "mask_align_corners": True},
    "xgradcam": {"eps": 1e-7},
    "ablationcam": {"chunk_size": 32},
    "integrated_gradients": {"steps": 50, "chunk_size": 64},
    "smoothgrad": {"samples": 25, "chunk_size": 64},
    "gradient_shap": {"samples": 25, "chunk_size": 64},
    "deeplift": {"max_pooling": "gradient"},
}
"""Method options for the comparison: they align xaicli with the reference's formulation so that the
agreement column is meaningful (Grad-CAM++ without alpha normalisation, Score-CAM's channel softmax and
align-corners masks, XGrad-CAM's 1e-7 are pytorch-grad-cam's; DeepLift's max pooling as Captum ends up
computing it under a ReLU module; 50 path points and 25 noisy copies or samples, 64 model inputs per
forward pass on both sides; 32 ablated copies per pass as pytorch-grad-cam's AblationCAM); they do not
change the cost. Options this xaicli build lacks are dropped; methods not named here run with their
defaults."""

TARGETS: dict[str, float] = {
    "gradcam": 3.0,
    "gradcam_pp": 3.0,
    "scorecam": 1.2,
    "xgradcam": 2.0,
    "layercam": 2.0,
    "hirescam": 2.0,
    "eigencam": 2.0,
    "ablationcam": 2.0,
    "fullgrad": 2.0,
    "integrated_gradients": 1.0,
    "smoothgrad": 1.0,
    "gradient_shap": 1.0,
    "deeplift": 1.0,
}
"""Required speed-up of xaicli over the reference (images/s ratio); methods not named here have none."""

NOTES: dict[str, str] = {
    "eigencam": "pytorch-grad-cam keeps the SVD's arbitrary sign: maps agree only where it matches xaicli's",
    "gradient_shap": "random draws differ between the libraries: agreement is statistical",
}
"""A note for a method row, printed with it: why its agreement column reads as it does."""


def method_rows() -> tuple[str, ...]:
    """One row per registered method, in the registry's order (imports the registry, hence torch)."""
    from xaicli.methods import available_methods

    return tuple(available_methods())


def heavy_rows() -> tuple[str, ...]:
    """The slow rows (fewer images and repeats): methods that run many model inputs per image
    (the ``chunked`` capability: Score-CAM, integrated gradients, SmoothGrad)."""
    from xaicli.methods import methods_where

    return tuple(methods_where(chunked=True))


def all_rows() -> tuple[str, ...]:
    """Every row name ``-m`` accepts; the default run is :func:`default_rows`."""
    return (*method_rows(), *EXTRA_ROWS, *METRIC_ROWS)


def default_rows() -> tuple[str, ...]:
    return (*method_rows(), *EXTRA_ROWS)


def comparison(method: str) -> tuple[dict, float | None]:
    """(options for the comparison, required speed-up or None) of a method row."""
    return dict(ALIGNMENT.get(method, {})), TARGETS.get(method)
