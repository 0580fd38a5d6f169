"""Perturbation methods: model-agnostic attributions from forward passes on perturbed copies of the input.

They need no gradients and no hooks, so they explain every model xaicli loads (TorchScript graphs,
models whose layers cannot be hooked, transformers). Each is one file behind the registry:

* ``occlusion`` - a sliding window replaced by a fill value (Zeiler & Fergus 2014);
* ``rise`` - random smooth masks, saliency = score-weighted mean mask (Petsiuk et al. 2018);
* ``feature_ablation`` - one superpixel at a time replaced by the fill (leave-one-out);
* ``lime`` - a weighted ridge regression on random superpixel on/off samples (Ribeiro et al. 2016);
* ``kernel_shap`` - the same regression with the Shapley kernel (Lundberg & Lee 2017).

The shared machinery: :mod:`._base` (fill values, the batched runner, post-processing),
:mod:`._superpixels` (the superpixel methods' rows, fits and painting), :mod:`._segments` (SLIC / grid
superpixels) and :mod:`._regression` (the surrogate fits).
"""
