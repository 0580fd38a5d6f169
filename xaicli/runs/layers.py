"""``xaicli layers``: the model's modules with their output shapes and inferred layouts (NCHW, NHWC, tokens
with their class/register tokens and patch grid), to pick layers for the CAM methods."""

from __future__ import annotations

from dataclasses import dataclass

from xaicli.config import Config
from xaicli.models.layers import LayerInfo, default_layer_of
from xaicli.models.loader import load_model


@dataclass
class LayerListing:
    input_shape: tuple[int, int, int]  # (C, H, W)
    default_layer: str | None  # what CAM methods explain when the config names no layer
    layers: list[LayerInfo]

    def to_dict(self) -> dict:
        return {"input_shape": list(self.input_shape), "default_layer": self.default_layer,
                "layers": [{"name": i.name, "type": i.type,
                            "output_shape": list(i.shape) if i.shape else None,
                            "layout": i.layout.to_dict() if i.layout else None,
                            "map_shape": list(i.map_shape) if i.map_shape else None} for i in self.layers]}


def list_layers(cfg: Config) -> LayerListing:
    """The model's modules as its load-time probe saw them (no further forward pass)."""
    loaded = load_model(cfg)
    infos = loaded.probe.layers
    default = loaded.default_layer or default_layer_of(loaded.model, infos)
    return LayerListing(loaded.input_shape, default, infos)
