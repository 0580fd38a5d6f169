"""What the measurements found, fixed in the methods and the engine (issue 11):

* integrated gradients reports its relative completeness error (``ig_delta_rel``), warns above
  ``tolerance`` and refines with ``steps: auto``;
* flat and nearly flat maps become all zeros (never a stretched full-range picture) and are flagged;
* Grad-CAM++ / Score-CAM at a mostly negative (pre-activation) layer is warned about at planning time;
* the library takes the input range from the model's preprocessing (a ``LoadedModel`` or ``input_range=``).
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import Tensor, nn

from xaicli.engine.results import flat_maps
from xaicli.methods import TopK, create_method, input_range_of
from xaicli.methods.gradient.integrated_gradients import CompletenessWarning
from xaicli.methods.postprocess import FLAT_RTOL, maxabs_normalise, minmax_normalise, normalise_map

pytestmark = pytest.mark.usefixtures("torch_single_thread")


class Quadratic(nn.Module):
    """logit_c = a_c * sum(x^2): integrated gradients from 0 along the straight path has an exactly
    known quadrature error, so completeness misses by a known amount at few steps."""

    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.tensor([1.0, -0.5]))

    def forward(self, x: Tensor) -> Tensor:
        return (x**2).sum(dim=(1, 2, 3))[:, None] * self.a


def test_ig_reports_relative_completeness_error_and_warns():
    x = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(0)) + 0.5
    ig = create_method("integrated_gradients", Quadratic(), options={"steps": 3, "baseline": "zeros",
                                                                    "method": "riemann_right"})
    with pytest.warns(CompletenessWarning, match=r"3 of 3 maps miss completeness by more than 5%"):
        out = ig.explain(x, TopK(1))
    # right Riemann sum of 2 a x^2 alpha over alpha in {1/3, 2/3, 1} = a x^2 * 2 * (1/3 + 2/3 + 1) / 3
    assert torch.allclose(out.extras["ig_delta_rel"], torch.full((3, 1), 4 / 3 - 1), atol=1e-5)


def test_ig_steps_auto_doubles_until_within_tolerance():
    x = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(1)) + 0.5
    opts = {"steps": "auto", "baseline": "zeros", "method": "riemann_right", "tolerance": 0.02}
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompletenessWarning)  # within tolerance: no warning
        out = create_method("integrated_gradients", Quadratic(), options=opts).explain(x, TopK(1))
    # right sum error = 1/n relative: 32 -> 3.1 %, 64 -> 1.6 % <= 2 %
    assert out.extras["ig_steps"].tolist() == [[64.0], [64.0]]
    assert (out.extras["ig_delta_rel"] <= 0.02).all()
    capped = create_method("integrated_gradients", Quadratic(), options={**opts, "tolerance": 1e-4,
                                                                       "max_steps": 128})
    with pytest.warns(CompletenessWarning, match="up to 128 steps"):
        out = capped.explain(x, TopK(1))
    assert out.extras["ig_steps"].max().item() == 128


def test_ig_steps_option_errors():
    from xaicli.errors import ConfigError

    with pytest.raises(ConfigError, match="or 'auto'"):
        create_method("integrated_gradients", Quadratic(), options={"steps": "many"})


def test_flat_and_nearly_flat_maps_become_zero():
    m = torch.tensor([[1.0, 1.0], [1.0, 1.0 + 0.5 * FLAT_RTOL]])[None, None]
    assert torch.equal(normalise_map(m), torch.zeros_like(m))
    # the plain rule (Score-CAM masks) still stretches it: only the final normalisation knows "flat"
    assert torch.equal(minmax_normalise(m), torch.tensor([[0.0, 0.0], [0.0, 1.0]])[None, None])
    varied = torch.tensor([[1.0, 1.0], [1.0, 1.0 + 2 * FLAT_RTOL]])[None, None]
    assert normalise_map(varied).max() == 1.0
    signed = torch.tensor([[0.3, 0.3], [0.3, 0.3]])[None, None]
    assert torch.equal(normalise_map(signed, signed=True), torch.zeros_like(signed))
    assert torch.equal(maxabs_normalise(torch.zeros(1, 1, 2, 2)), torch.zeros(1, 1, 2, 2))


def test_flat_maps_of_constant_maps_and_blank_images():
    maps = torch.rand(3, 2, 5, 5)
    maps[0, 1] = 0.0
    images = torch.rand(3, 1, 5, 5)
    images[2] = 0.25  # a blank frame: any structure in its maps is the model's padding
    assert flat_maps(maps, images).tolist() == [[False, True], [False, False], [True, True]]
    assert flat_maps(maps).tolist() == [[False, True], [False, False], [False, False]]


def test_cam_of_a_blank_image_is_not_stretched_to_full_range():
    """Score-CAM on an all-white image gives an all-zero raw map; the written map is zeros, not noise."""
    from xaicli.config import config_from_dict
    from xaicli.engine import Explainer, explain_images

    explainer = Explainer(config_from_dict({"methods": [{"name": "scorecam", "layers": ["features.1.bn"]}]}),
                          emit_warnings=False)
    result = explain_images(explainer, torch.ones(1, 1, 28, 28))
    maps = result.maps[("scorecam", "features.1.bn")]
    assert torch.equal(maps, torch.zeros_like(maps)) and flat_maps(maps).all()


def test_planning_warns_about_nonnegative_methods_at_negative_layers():
    from xaicli.config import config_from_dict
    from xaicli.engine import Explainer
    from xaicli.engine.plan import PlanWarning

    cfg = config_from_dict({"methods": [{"name": "scorecam", "layers": ["features.1.bn", "features.1.relu"]},
                                        {"name": "gradcam", "layers": ["features.1.bn"]}]})
    with pytest.warns(PlanWarning, match=r"scorecam at 'features.1.bn': \d+% .* e.g. 'features.1.relu'"):
        explainer = Explainer(cfg)
    assert len(explainer.warnings) == 1  # not the post-activation layer, not Grad-CAM
    quiet = Explainer(cfg, emit_warnings=False)
    assert quiet.warnings == explainer.warnings


def test_cli_reports_planning_and_flat_warnings(cli, tmp_path, tiny_config, write_config, image_tree):
    from PIL import Image

    Image.new("RGB", (20, 16)).save(image_tree / "dog" / "black.png")
    tiny_config["methods"] = [{"name": "gradcam_pp", "layers": ["features.0.bn"]}]
    tiny_config["targets"] = {"topk": 1}
    (image_tree / "cat" / "a.png").unlink()
    (image_tree / "cat" / "b.jpg").unlink()
    res = cli("explain", image_tree, "-c", write_config(tmp_path, tiny_config), "-o", tmp_path / "out")
    assert res.exit_code == 0, res
    assert "warning: gradcam_pp at 'features.0.bn'" in res.stderr
    assert "warning: gradcam_pp @ features.0.bn: 1 of 2 maps are flat" not in res.stderr  # half: not mostly
    import json

    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["summary"]["flat_maps"] == {"gradcam_pp @ features.0.bn": 1}
    assert any("gradcam_pp at 'features.0.bn'" in w for w in run["summary"]["warnings"])


def test_mostly_flat_maps_are_warned_about(cli, tmp_path, tiny_config, write_config):
    from PIL import Image

    root = tmp_path / "blank"
    root.mkdir()
    for name in ("a", "b"):
        Image.new("RGB", (20, 16), (30, 30, 30)).save(root / f"{name}.png")
    res = cli("explain", root, "-c", write_config(tmp_path, tiny_config), "-o", tmp_path / "out")
    assert res.exit_code == 0
    assert "warning: gradcam @ features.1.conv: 4 of 4 maps are flat" in res.stderr


def test_library_takes_the_input_range_from_the_preprocessing():
    """IG's black baseline is raw black (input_range[0]) from a LoadedModel or input_range=, and a warned
    mean-grey fallback without either."""
    from xaicli.config import config_from_dict
    from xaicli.models.loader import load_model

    loaded = load_model(config_from_dict({}))
    lo, hi = input_range_of(loaded.mean, loaded.std, 1)
    assert lo.item() == pytest.approx(-0.286 / 0.353, abs=1e-4) and hi.item() == pytest.approx(0.714 / 0.353,
                                                                                               abs=1e-4)
    x = torch.rand(2, 1, 28, 28)
    ig = create_method("integrated_gradients", loaded, options={"steps": 4})
    assert torch.equal(ig.baseline(x, ig.make_call().input_range), torch.full_like(x, lo.item()))
    explicit = create_method("integrated_gradients", loaded.model, options={"steps": 4}, input_range=(lo, hi))
    assert torch.equal(explicit.make_call().input_range[0], lo)
    bare = create_method("integrated_gradients", loaded.model, options={"steps": 4})
    with pytest.warns(UserWarning, match="baseline 'black' without the model's input range"):
        assert torch.equal(bare.baseline(x, bare.make_call().input_range), torch.zeros_like(x))
