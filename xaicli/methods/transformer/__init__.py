"""Methods for vision transformers: attention rollout, gradient-weighted attention (transformer attribution,
grad rollout) and LeGrad. One module per method over :mod:`._base`; the attention weights they need are
captured for the call by :mod:`.capture`."""
