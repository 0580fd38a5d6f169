"""The streaming pipeline's batching (issue 15): small first and last loader batches shorten the fill and
drain without changing which images are computed together, so maps stay bit-identical."""

from __future__ import annotations

import itertools

import pytest
import torch

from tests.conftest import save_random_image
from xaicli.config import config_from_dict
from xaicli.engine import Explainer, explain_images, explain_items
from xaicli.engine.discover import discover_images
from xaicli.engine.loader import chunk_sizes, iter_batches


def _call_groups(chunks: list[int], call: int) -> list[tuple[int, int]]:
    """(start, end) of every engine call when each loader batch is cut into calls of ``call`` images."""
    groups, start = [], 0
    for size in chunks:
        for offset in range(0, size, call):
            groups.append((start + offset, start + min(size, offset + call)))
        start += size
    return groups


@pytest.mark.parametrize("n, batch, call", list(itertools.product(
    [0, 1, 5, 16, 17, 63, 64, 65, 250, 256, 1000], [1, 4, 64], [1, 3, 16, 64])))
def test_ramp_batches_keep_every_call_group(n, batch, call):
    call = min(call, batch)
    plain = chunk_sizes(n, batch)
    ramped = chunk_sizes(n, batch, ramp=call)
    assert sum(plain) == sum(ramped) == n and all(0 < s <= batch for s in ramped)
    assert _call_groups(ramped, call) == _call_groups(plain, call)
    if n > batch > call:
        assert ramped[0] == call and ramped[-1] <= call  # the fill and the drain are one call each
    if call == batch:
        assert ramped == plain


def test_ramped_stream_gives_bit_identical_maps(tmp_path, tiny_config):
    """explain_items (ramped batches: [2, 1, 3, 1] for 7 images, batches of 3, calls of 2) gives the
    same bits as the same engine on unramped batches ([3, 3, 1])."""
    for i in range(7):
        save_random_image(tmp_path / "images" / f"{i}.png", seed=i)
    items = discover_images([str(tmp_path / "images")])
    cfg = config_from_dict({**tiny_config, "run": {**tiny_config["run"], "batch_size": 3}})
    explainer = Explainer(cfg, fold_batchnorms=True)
    explainer.batching.call_size = 2
    key = ("gradcam", "features.1.conv")
    ramped = list(explain_items(explainer, items))
    assert [len(b.items) for b in ramped] == [2, 1, 3, 1]
    plain = [explain_images(explainer, b.images) for b in iter_batches(items, explainer.pre, 3, workers=1)]
    assert [m.maps[key].shape[0] for m in plain] == [3, 3, 1]
    maps = torch.cat([b.result.maps[key] for b in ramped])
    assert torch.equal(maps, torch.cat([m.maps[key] for m in plain]))
    assert torch.equal(torch.cat([b.result.probs for b in ramped]), torch.cat([m.probs for m in plain]))
