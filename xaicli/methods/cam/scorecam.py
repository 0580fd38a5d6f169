"""Score-CAM (Wang et al., CVPR-W 2020, arXiv:1910.01279), as in seed 001.

For each channel k of the target layer:
  1. upsample A^k bilinearly to the input size and min-max normalise it to [0, 1] -> mask M^k,
  2. run the model on the masked input x * M^k (in normalised-input space, so masked pixels become the
     dataset mean),
  3. the channel weight is the softmax probability of the target class on that masked input;
then L^c = ReLU(sum_k w^c_k A^k), upsampled and normalised like every CAM.

Gradient-free, so the cost is one forward per channel and image. Masked inputs of several images and
channels are built chunk by chunk (never all at once) and run ``chunk_size`` at a time; all K targets
share the same masked forwards. ``max_n`` keeps the N channels with the largest spatial standard
deviation per image (seed 001's ``max_N``): with N much smaller than C it is proportionally faster, at
the price of dropping low-contrast channels (BENCHMARKS.md reports the correlation to the full map).

``weights: channel_softmax`` with ``mask_align_corners: true`` reproduces pytorch-grad-cam instead:
raw target logits of the masked inputs, soft-maxed over channels, masks upsampled corner-aligned.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from xaicli.methods.base import CHUNK_OPTION, Call, Explanation, Option, TargetSpec, resolve_targets
from xaicli.methods.cam.base import CAM_OPTIONS, CAMMethod
from xaicli.methods.hooks import capture_activations, inference_state
from xaicli.methods.postprocess import minmax_normalise
from xaicli.methods.registry import register


@register
class ScoreCAM(CAMMethod):
    name = "scorecam"
    summary = "Score-CAM: each channel weighted by the class score of the input masked by that channel."
    paper = "Wang et al., Score-CAM, CVPR Workshops 2020 (arXiv:1910.01279)"
    uses_gradients = False
    # masks are min-max normalised activations: on a mostly negative (pre-activation) layer the largest
    # values mark the background, and the ReLU'd sum is often all zero
    nonnegative_activations = True
    chunked = True
    default_chunk_size = 128
    options = {
        **CAM_OPTIONS,
        "max_n": Option(0, "keep only the N channels with the largest std per image (0 = all channels)",
                        minimum=0),
        "chunk_size": CHUNK_OPTION,
        "weights": Option("class_softmax", "class_softmax: target probability (seed 001, paper); "
                          "channel_softmax: target logit soft-maxed over channels (pytorch-grad-cam)",
                          choices=("class_softmax", "channel_softmax")),
        "mask_align_corners": Option(False, "upsample masks with align_corners=True (pytorch-grad-cam's "
                                            "UpsamplingBilinear2d); false = half-pixel centres like cv2/PIL"),
    }

    @torch.no_grad()
    def compute(self, x: Tensor, targets: TargetSpec, call: Call) -> Explanation:
        size = (x.shape[-2], x.shape[-1])
        with inference_state(self.model):
            # the hooks must be gone before the masked forwards, which would overwrite the activations
            with capture_activations(self.model, self.layers, differentiable=False) as acts:
                logits = self.model(x)  # (B, N)
            tgt = resolve_targets(logits, targets)  # (B, K)
            maps = {name: self.finish(self.layer_cam(x, acts[name], tgt, call.chunk_size), size)
                    for name in self.layers}
        return Explanation(maps=maps, targets=tgt, logits=logits)

    def layer_cam(self, x: Tensor, acts: Tensor, tgt: Tensor, step: int) -> Tensor:
        """(B, C, h, w) activations -> (B, K, h, w) un-normalised Score-CAM maps."""
        acts = acts.float()
        b, c = acts.shape[:2]
        n = self.opts["max_n"]
        if n and n < c:
            keep = acts.flatten(2).std(dim=2).topk(n, dim=1).indices  # (B, n)
            acts = acts.gather(1, keep[:, :, None, None].expand(-1, -1, *acts.shape[2:]))
            c = n
        masks = F.interpolate(acts, size=tuple(x.shape[-2:]), mode="bilinear",
                              align_corners=self.opts["mask_align_corners"])
        masks = minmax_normalise(masks)  # (B, n, H, W)
        masks = masks.reshape(b * c, 1, *x.shape[-2:])  # (B*n, 1, H, W)
        image_of = torch.arange(b * c, device=x.device) // c  # row -> image index
        scores = []
        for start in range(0, b * c, step):
            rows = image_of[start : start + step]
            out = self.model(x[rows] * masks[start : start + step].to(x.dtype)).float()  # (chunk, N)
            if self.opts["weights"] == "class_softmax":
                out = out.softmax(dim=1)
            scores.append(out.gather(1, tgt[rows]))  # (chunk, K)
        weights = torch.cat(scores).view(b, c, -1)  # (B, n, K)
        if self.opts["weights"] == "channel_softmax":
            weights = weights.softmax(dim=1)
        return torch.relu(torch.einsum("bnk,bnhw->bkhw", weights, acts))
