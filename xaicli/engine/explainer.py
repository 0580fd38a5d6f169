"""The :class:`Explainer`: a model prepared once, its planned methods and targets, explaining tensors.

It is the engine's one entry point for every command and for library users: ``explain`` and ``sweep``
(and later ``evaluate``) build one per command, and :func:`~xaicli.engine.stream.explain_items` streams
image files through it. Per call, the display images go to the device once and are normalised there;
each method runs on the whole call (the first method's clean forward fixes the targets and scores for
all others).

Preparing the model modifies the model object it was given - channels-last memory format always, and
two opt-in speed-ups the CLI turns on because it owns its model: batch-norm folding (:mod:`.fold`) and
``run.compile`` (:mod:`.compile`). The functional-ReLU patch of the ReLU-rule methods (process-wide for
the duration of a call) is opt-in for the same reason.
"""

from __future__ import annotations

import warnings
from contextlib import nullcontext

import torch
from torch import Tensor

from xaicli.config import Config
from xaicli.engine.batching import Batching
from xaicli.engine.discover import InputImage
from xaicli.engine.labels import ImageLabels
from xaicli.engine.plan import (
    PlannedMethod,
    PlanWarning,
    activation_sign_warnings,
    plan_methods,
    plan_targets,
)
from xaicli.engine.preprocess import Preprocess
from xaicli.engine.results import Explanations, MapKey, Slot
from xaicli.methods.base import InputRange, TargetSpec, TopK, WithClasses, resolve_targets
from xaicli.models.digest import ModelDigest, model_digest
from xaicli.models.loader import LoadedModel, load_model, select_device


class Explainer:
    """A model, its methods and targets, ready to explain batches of display images (library API).

    ``fold_batchnorms`` and ``functional_relu`` are the opt-in speed-up and patch described in the module
    docstring; ``loaded`` reuses a model already loaded for the same config (it is prepared in place).
    Planning warnings (e.g. a method that assumes non-negative activations at a mostly negative layer)
    are kept in :attr:`warnings` and, with ``emit_warnings``, also issued as :class:`PlanWarning`.
    """

    def __init__(self, cfg: Config, loaded: LoadedModel | None = None, device: torch.device | None = None, *,
                 fold_batchnorms: bool = False, functional_relu: bool = False, emit_warnings: bool = True):
        self.cfg = cfg
        self.notices: list[str] = []  # what the config asked for that is ignored or capped, one line each
        self.loaded = loaded or load_model(cfg)
        # the model's digest (fingerprints) is of the model as loaded: taken now if preparing changes it
        self._digest = model_digest(cfg, self.loaded.model) if fold_batchnorms or cfg.run.compile else None
        self.device = device or select_device(cfg.run.device)
        self.pre = Preprocess(self.loaded.size, self.loaded.mode, self.loaded.mean, self.loaded.std,
                              cfg.preprocess.resize, cfg.preprocess.alpha_background)
        model = self.loaded.model.to(self.device)
        self.methods: list[PlannedMethod] = plan_methods(cfg, self.loaded, self.notices)
        self.warnings: list[str] = activation_sign_warnings(self.methods, self.loaded, self.device)
        for text in self.warnings if emit_warnings else ():
            warnings.warn(text, PlanWarning, stacklevel=2)
        # every module a method hooks or reads (FullGrad: all conv / batch-norm biases): kept unfolded, eager
        self.hooked_layers = list(dict.fromkeys(n for pm in self.methods for n in pm.method.layers_read()))
        # before channels_last, which then converts the new weights
        self.folded = self._fold_batchnorms() if fold_batchnorms else []
        self.channels_last = use_channels_last(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.compiled = self._compile() if cfg.run.compile else []
        self.functional_relu = functional_relu
        self.target_spec, self.slots = plan_targets(cfg, self.loaded.classes, self.notices)
        labels_path = cfg.resolve_path(cfg.targets.labels) if cfg.targets.labels else None
        self.labels = ImageLabels.from_file(labels_path, self.loaded.classes)
        if cfg.run.precision != "fp32" and self.device.type != "cuda":
            self.notices.append(f"run.precision {cfg.run.precision} applies on CUDA only: this "
                                f"{self.device.type} run computes in fp32")
        self.mean, self.std = self.pre.normaliser(self.device)
        self.input_range: InputRange = (((0 - self.mean) / self.std).flatten(),  # raw 0 and raw 1, normalised
                                        ((1 - self.mean) / self.std).flatten())
        self.batching = Batching.plan(
            cfg.run.batch_size, self.device, self.loaded.size,
            [(pm.name, type(pm.method), pm.method.opts.get("chunk_size")) for pm in self.methods])

    @property
    def classes(self) -> list[str]:
        return self.loaded.classes

    @property
    def digest(self) -> ModelDigest:
        """What identifies the model: digests of its code and weights as loaded
        (:mod:`xaicli.models.digest`)."""
        if self._digest is None:
            self._digest = model_digest(self.cfg, self.loaded.model)
        return self._digest

    @property
    def explains_true_class(self) -> bool:
        """Whether a slot is the image's labelled class (``targets.true_class``): calls need labels."""
        return any(s.kind == "true" for s in self.slots)

    def slots_of(self, item: InputImage) -> list[Slot]:
        """The slots written for ``item``: all of them, less ``true`` when its label is unknown."""
        if not self.explains_true_class or self.labels.index(item) is not None:
            return list(self.slots)
        return [s for s in self.slots if s.kind != "true"]

    @property
    def map_keys(self) -> list[MapKey]:
        """(method, layer) of every map a call returns, in the config's order."""
        return [(pm.name, layer) for pm in self.methods for layer in pm.layers]

    def _fold_batchnorms(self) -> list[str]:
        """Fold eval-mode batch norms into their convolutions where verified equal (:mod:`.fold`)."""
        from xaicli.engine.fold import fold_batchnorms

        probe = torch.randn((1, *self.loaded.input_shape), generator=torch.Generator().manual_seed(0))
        return fold_batchnorms(self.loaded.model, probe.to(self.device), self.hooked_layers)

    def _compile(self) -> list[str]:
        """``run.compile``: compile the submodules no hook needs (see :mod:`xaicli.engine.compile`)."""
        from xaicli.engine.compile import compile_around_hooks

        blocked = [pm.name for pm in self.methods if pm.method.swaps_relu_rules()]
        if blocked:
            self.notices.append(f"run.compile ignored: {', '.join(blocked)} swap ReLU rules at run time")
            return []
        return compile_around_hooks(self.loaded.model, self.hooked_layers)

    def autocast(self):
        precision = self.cfg.run.precision
        if precision == "fp32" or self.device.type != "cuda":
            return nullcontext()
        return torch.autocast("cuda", dtype=torch.bfloat16 if precision == "bf16" else torch.float16)

    def normalise(self, images: Tensor) -> Tensor:
        """(B, C, H, W) display images in [0, 1] -> the model's input on the device."""
        x = images.to(self.device, non_blocking=True)
        x = (x - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def explain_batch(self, images: Tensor, labels: Tensor | None = None) -> Explanations:
        """Explain (B, C, H, W) display images in [0, 1] in one call (no splitting, no back-off: see
        :func:`~xaicli.engine.stream.explain_images` for that); the result is on the device.

        ``labels`` (B,) class indices, -1 where unknown: needed when a slot is the true class
        (:attr:`explains_true_class`); its maps for unknown labels are of the predicted class and are not
        meant to be used (:meth:`slots_of` leaves them out)."""
        x = self.normalise(images)
        spec: TargetSpec = self.targets_for(images.shape[0], labels)
        logits = None
        maps: dict[MapKey, Tensor] = {}
        extras: dict[tuple[str, str], Tensor] = {}
        with self.autocast():
            for pm in self.methods:
                exp = pm.method.explain(x, spec, chunk_size=self.batching.chunk_size(pm.name),
                                        input_range=self.input_range, functional_relu=self.functional_relu)
                spec = exp.targets
                if logits is None and exp.logits is not None:
                    logits = exp.logits
                for layer, m in exp.maps.items():
                    maps[(pm.name, layer)] = m.float()
                for name, v in exp.extras.items():
                    extras[(pm.name, name)] = v
            if logits is None:
                with torch.no_grad():
                    logits = self.loaded.model(x)
        return self._scored(logits, spec, maps, extras)

    def targets_for(self, n: int, labels: Tensor | None) -> TargetSpec:
        """The target spec of a call on ``n`` images: the planned one, plus each image's label as the last
        target when the true class is explained."""
        if not self.explains_true_class:
            return self.target_spec
        if labels is None:
            raise ValueError("this explainer explains the true class (targets.true_class): pass labels=, "
                             "(B,) class indices with -1 where unknown")
        if labels.shape[0] != n:
            raise ValueError(f"labels has {labels.shape[0]} entries for {n} images")
        return WithClasses(self.target_spec, labels.reshape(n, 1))

    def predict_batch(self, images: Tensor) -> Explanations:
        """The top-1 class and its probability of each image, from one plain forward pass (no maps)."""
        x = self.normalise(images)
        with torch.no_grad(), self.autocast():
            logits = self.loaded.model(x)
        return self._scored(logits, TopK(1), {}, {})

    def _scored(self, logits: Tensor, spec: TargetSpec, maps: dict, extras: dict) -> Explanations:
        targets = resolve_targets(logits, spec)
        probs = logits.float().softmax(dim=1).gather(1, targets)
        return Explanations(targets, probs, maps, extras, predicted=logits.detach().argmax(dim=1))

    def is_signed(self, method_name: str) -> bool:
        """Whether the maps of the planned method ``method_name`` are signed ([-1, 1])."""
        return next(p for p in self.methods if p.name == method_name).method.is_signed()


def use_channels_last(device: torch.device) -> bool:
    """Channels-last (NHWC) model and inputs: on CUDA (tensor cores) and on the CPU (oneDNN convolutions
    without layout reorders, ~1.5x on ResNet-18 with 2 cores); maps equal up to float rounding."""
    return device.type in ("cuda", "cpu")
