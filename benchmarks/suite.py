"""The benchmark suite: xaicli's engine against pytorch-grad-cam and Captum, in one process.

One model (a torchvision architecture with random weights, no download) is loaded once; the reference
libraries get a deep copy in PyTorch's default layout, exactly as a user would hand it to them, and
xaicli's :class:`~xaicli.engine.Explainer` gets the original and prepares it as ``xaicli explain`` does
(batch norms folded, the functional-ReLU patch on). Both see the same synthetic images. Each row is
timed with xaicli and the reference alternating repeat by repeat, so a load change on a shared machine
hits both sides alike.

What is timed on xaicli's side is :func:`xaicli.engine.explain_images` per batch (the CPU micro-batch
split, normalisation on the device, the method, post-processing) plus copying the maps to the host; on
the reference side the library call alone (see :mod:`benchmarks.references`).

The rows: one per method in xaicli's registry, then :data:`~benchmarks.rows.EXTRA_ROWS` (see
:mod:`benchmarks.rows`). The methods that read attention and the ``gradcam_vit`` row run on a vision
transformer (``--vit-model``, torchvision ``vit_b_16`` by default, loaded on first use) instead of the
CNN; its zero-initialised head gets seeded random weights so that gradients (and the agreement column)
are not trivially zero.
"""

from __future__ import annotations

import copy
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import Tensor

from benchmarks.measure import Timing, pearson, sync, synthetic_images
from benchmarks.references import (
    CAPTUM,
    PGC,
    TORCHCAM,
    Reference,
    make_reference,
    perturbation_references,
    reference_available,
    reference_library,
    vit_reshape_transform,
)
from benchmarks.rows import (
    METRIC_ROWS,
    NOTES,
    all_rows,
    comparison,
    default_rows,
    heavy_rows,
    method_rows,
    perturbation_rows,
    transformer_rows,
)

#: xaicli method -> (options for the comparison, required speed-up over the reference or None), for
#: every registered method (see :mod:`benchmarks.rows`)
COMPARISONS: dict[str, tuple[dict, float | None]] = {name: comparison(name) for name in method_rows()}
HEAVY = heavy_rows()  # the ``chunked`` methods: fewer images and repeats
PERTURBATION = perturbation_rows()  # thousands of forward passes per image: fewer images still
ON_VIT = transformer_rows()  # timed on the vision transformer, with heavy_images per repeat
ALL_ROWS = all_rows()
SCORECAM_MAX_N = 64
SCORECAM_MAX_N_TARGET = 6.0
TOPK_LIMIT = 3.0


@dataclass
class BenchOptions:
    model: str = "resnet18"
    size: int = 224
    batch: int = 32
    images: int = 64  # per timed call, for the fast rows
    heavy_images: int = 4  # per timed call, for the chunked methods but Score-CAM (IG, SmoothGrad, ...)
    scorecam_images: int = 2  # per timed call, for Score-CAM (every channel is a forward pass per image)
    perturbation_images: int = 2  # per timed call, for the perturbation methods (RISE: 2,000 forwards/image)
    repeats: int = 5
    heavy_repeats: int = 3
    device: str = "cpu"
    precision: str = "fp32"
    methods: Sequence[str] | None = None  # rows to run (see ALL_ROWS); None = all
    e2e_images: Sequence[int] = (256, 1024)  # folder sizes of the end-to-end rows (empty or 0: none)
    e2e_repeats: int = 3
    workdir: Path | None = None  # where the end-to-end row writes its JPEGs and outputs
    user_script: Path | None = None  # the pytorch-grad-cam user script (default: benchmarks/ in the repo)
    seed: int = 0
    vit_model: str = "vit_b_16"  # torchvision vision transformer for the attention rows
    is_quick: bool = False  # set by quick(): too few images and repeats to judge the targets

    def __post_init__(self) -> None:
        if isinstance(self.e2e_images, int):
            self.e2e_images = (self.e2e_images,) if self.e2e_images > 0 else ()
        self.e2e_images = tuple(sorted({n for n in self.e2e_images if n > 0}))

    def quick(self) -> BenchOptions:
        """A smoke run in a minute or two: few images, few repeats (numbers are indicative only)."""
        return replace(self, batch=min(self.batch, 8), images=min(self.images, 8), heavy_images=1,
                       scorecam_images=1, perturbation_images=1, repeats=2, heavy_repeats=1,
                       e2e_images=(16,) if self.e2e_images else (), e2e_repeats=1, is_quick=True)


@dataclass
class Row:
    """One line of the table. ``ratio`` is xaicli / reference images/s, except for the top-k row where
    it is the cost of top-3 relative to top-1 (lower is better)."""

    method: str
    model: str
    size: int
    batch: int
    images: int
    xaicli: float | None  # images/s
    reference: str
    reference_rate: float | None
    ratio: float | None = None
    target: str = ""
    met: bool | None = None
    agreement: float | None = None  # Pearson correlation of the maps (see ``agreement_with``)
    agreement_with: str = ""
    note: str = ""
    seconds: dict[str, list[float]] = field(default_factory=dict)
    stages: dict[str, dict[str, float]] = field(default_factory=dict)  # end to end: xaicli's run.json stages


@dataclass
class BenchReport:
    options: BenchOptions
    environment: dict
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def environment(device: torch.device) -> dict:
    """Machine and library versions, recorded with every benchmark."""
    from importlib import metadata

    import torchvision

    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "not installed"

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        mem = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    env = {
        "cpu": cpu, "cores": os.cpu_count(), "ram_gib": mem, "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(), "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "grad-cam": version("grad-cam"), "captum": version("captum"), "device": str(device),
        "load_average_start": _loadavg(),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def _loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


@dataclass
class Subject:
    """A model under test: xaicli's loaded copy and the reference libraries' copy (default layout)."""

    name: str  # torchvision architecture
    size: int  # square input size
    loaded: object  # xaicli.models.loader.LoadedModel
    ref_model: torch.nn.Module


def _config(opts: BenchOptions, method: str, options: dict, topk: int = 1, subject: Subject | None = None):
    from xaicli.config import config_from_dict
    from xaicli.models.builtin import BUILTIN_MODELS

    name, size = (subject.name, subject.size) if subject else (opts.model, opts.size)
    builtin = name in BUILTIN_MODELS  # e.g. the bundled fashion_mnist_cnn, at its own input size
    return config_from_dict({
        "model": {"source": "builtin" if builtin else "torchvision", "name": name},
        "preprocess": {} if builtin else {"size": [size, size]},
        "methods": [{"name": method, "options": options}],
        "targets": {"topk": topk},
        "run": {"device": opts.device, "batch_size": opts.batch, "precision": opts.precision},
    })


def _chunks(x: Tensor, batch: int) -> list[Tensor]:
    return [x[i : i + batch] for i in range(0, x.shape[0], batch)]


def measure_pair(a: Callable[[], object], b: Callable[[], object] | None, images: int, repeats: int,
                 device: torch.device, warm: tuple[Callable[[], object] | None, ...] | None = None,
                 ) -> tuple[Timing, Timing | None]:
    """Time ``a`` and ``b`` alternately (a, b, a, b, ...) after one untimed warm-up call each (of
    ``warm``'s functions when given, e.g. the same call on one image for the slow rows). Each Timing's
    ``last`` holds the output of its last timed call."""
    sa: list[float] = []
    sb: list[float] = []
    last: list[object] = [None, None]
    for fn in warm or (a, b):
        if fn is not None:
            fn()
            sync(device)
    for _ in range(repeats):
        for i, (fn, out) in enumerate(((a, sa), (b, sb))):
            if fn is None:
                continue
            t0 = time.perf_counter()
            last[i] = fn()
            sync(device)
            out.append(time.perf_counter() - t0)
    ta = Timing(sa, images, last[0])
    return ta, (Timing(sb, images, last[1]) if b is not None else None)


class Suite:
    """Runs the rows of one benchmark; ``log`` receives one line per finished step."""

    def __init__(self, opts: BenchOptions, log: Callable[[str], None] = print):
        from xaicli.models.loader import load_model, select_device

        self.opts = opts
        self.log = log
        self.device = select_device(opts.device)
        torch.manual_seed(opts.seed)
        self.loaded = load_model(_config(opts, "gradcam", {}))
        # what a user hands to the reference libraries: the same weights, PyTorch's default layout
        self.ref_model = copy.deepcopy(self.loaded.model).to(self.device).eval()
        # (a builtin model has its own input size, not opts.size)
        self.cnn = Subject(opts.model, self.loaded.size[0], self.loaded, self.ref_model)
        self._vit: Subject | None = None
        self.report = BenchReport(opts, environment(self.device))
        self.images = synthetic_images(max(opts.images, opts.heavy_images, opts.scorecam_images),
                                       self.loaded.size, seed=opts.seed, channels=self.loaded.input_shape[0])

    # --- helpers -----------------------------------------------------------------------------------

    def vit(self) -> Subject:
        """The vision transformer of the attention rows (loaded on first use; 224x224, its native size)."""
        if self._vit is None:
            from xaicli.models.loader import load_model

            torch.manual_seed(self.opts.seed)
            probe = Subject(self.opts.vit_model, 224, None, None)
            loaded = load_model(_config(self.opts, "gradcam", {}, subject=probe))
            head = getattr(getattr(loaded.model, "heads", None), "head", None)
            if isinstance(head, torch.nn.Linear):  # torchvision zero-initialises it: no gradients at all
                with torch.no_grad():
                    torch.nn.init.normal_(head.weight, std=0.02, generator=torch.Generator().manual_seed(0))
            self._vit = Subject(probe.name, 224, loaded, copy.deepcopy(loaded.model).to(self.device).eval())
        return self._vit

    def explainer(self, method: str, options: dict, topk: int = 1, subject: Subject | None = None):
        """An explainer prepared exactly as the CLI prepares its own (``xaicli.runs.explain``)."""
        from xaicli.engine import Explainer
        from xaicli.methods import get_method

        subject = subject or self.cnn
        known = get_method(method).options
        options = {k: v for k, v in options.items() if k in known}
        return Explainer(_config(self.opts, method, options, topk, subject), subject.loaded, self.device,
                         fold_batchnorms=True, functional_relu=True, emit_warnings=False)

    def engine_fn(self, explainer, images: Tensor, batch: int, render: bool = False) -> Callable[[], list]:
        """What xaicli does per batch: explain on the device (in CPU micro-batches, as the CLI does), maps
        (and optionally overlays) to the host."""
        from xaicli.engine import explain_images
        from xaicli.render.overlay import overlay

        chunks = _chunks(images.pin_memory() if self.device.type == "cuda" else images, batch)

        def run() -> list[Tensor]:
            out = []
            for chunk in chunks:
                for m in explain_images(explainer, chunk).maps.values():
                    if render:
                        overlay(chunk.to(m.device), m).cpu()
                    out.append(m.cpu())
            return out

        return run

    def normalised(self, explainer, images: Tensor) -> Tensor:
        mean, std = explainer.mean, explainer.std
        return ((images.to(self.device) - mean) / std).contiguous()

    def targets(self, x: Tensor, batch: int, subject: Subject | None = None) -> list[Tensor]:
        with torch.no_grad():
            return [(subject or self.cnn).ref_model(c).argmax(dim=1) for c in _chunks(x, batch)]

    def layer_module(self, explainer, subject: Subject | None = None):
        from xaicli.models.layers import find_module

        layer = next((ly for pm in explainer.methods for ly in pm.layers if ly is not None), None)
        return layer, (find_module((subject or self.cnn).ref_model, layer) if layer else None)

    # --- rows ----------------------------------------------------------------------------------------

    def run(self, rows: Sequence[str]) -> BenchReport:
        for name in rows:
            t0 = time.perf_counter()
            if name == "forward":
                self.forward_row()
            elif name == "topk":
                self.topk_row()
            elif name == "gradcam_vit":
                self.method_row("gradcam", self.vit(), row="gradcam_vit")
            elif name in METRIC_ROWS:
                from benchmarks.metric_rows import metric_rows

                for row in metric_rows(self, name):
                    self.add(row)
            elif name == "e2e":
                from benchmarks.end_to_end import end_to_end_rows

                layer, _ = self.layer_module(self.explainer("gradcam", {}))
                for row in end_to_end_rows(self.opts, self.ref_model, layer, self.log):
                    self.add(row)
            else:
                self.method_row(name, self.vit() if name in ON_VIT else self.cnn)
            self.log(f"  {name}: {time.perf_counter() - t0:.0f}s")
        self.report.environment["load_average_end"] = _loadavg()
        return self.report

    def add(self, row: Row | None) -> None:
        if row is not None:
            self.report.rows.append(row)
            rate = f"{row.xaicli:.2f}" if row.xaicli else "-"
            ref = f"{row.reference_rate:.2f}" if row.reference_rate else "-"
            ratio = f"{row.ratio:.2f}" if row.ratio is not None else "-"
            self.log(f"{row.method}: xaicli {rate} img/s, {row.reference} {ref} img/s, ratio {ratio}")

    def forward_row(self) -> None:
        """Context: a plain forward pass of the model (no attribution), as xaicli prepares the model."""
        explainer = self.explainer("gradcam", {})
        x = self.normalised(explainer, self.images[: self.opts.images])
        if explainer.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        chunks = _chunks(x, self.opts.batch)

        def fwd(model) -> Callable[[], None]:
            def run() -> None:
                with torch.inference_mode(), explainer.autocast():
                    for c in chunks:
                        model(c)
            return run

        plain = _chunks(self.normalised(explainer, self.images[: self.opts.images]), self.opts.batch)

        def ref() -> None:
            with torch.no_grad():
                for c in plain:
                    self.ref_model(c)

        ta, tb = measure_pair(fwd(explainer.loaded.model), ref, x.shape[0], self.opts.repeats, self.device)
        self.add(Row("forward (no attribution)", self.opts.model, self.opts.size, self.opts.batch, x.shape[0],
                     ta.rate, "torch no_grad forward, default layout", tb.rate, tb.median / ta.median,
                     note="context only: xaicli's model preparation vs the plain model",
                     seconds={"xaicli": ta.seconds, "reference": tb.seconds}))

    def method_row(self, name: str, subject: Subject, row: str | None = None) -> None:
        """Method ``name`` on ``subject`` against its reference library (the row is called ``row``)."""
        opts = self.opts
        options, target = COMPARISONS[name] if row is None else ({}, None)
        n = opts.images
        if name in HEAVY or subject is not self.cnn:
            n = opts.scorecam_images if name == "scorecam" else opts.heavy_images
        if name in PERTURBATION:
            n = opts.perturbation_images
        batch = min(opts.batch, n)
        repeats = opts.heavy_repeats if name in HEAVY or subject is not self.cnn else opts.repeats
        images = self.images[:n]
        if subject is not self.cnn:
            images = synthetic_images(n, (subject.size, subject.size), seed=opts.seed,
                                      channels=subject.loaded.input_shape[0])
        explainer = self.explainer(name, options, subject=subject)
        layer, module = self.layer_module(explainer, subject)
        lo, hi = (0 - explainer.mean) / explainer.std, (1 - explainer.mean) / explainer.std
        ref = None
        library = reference_library(name)
        if library is not None and not reference_available(library):
            self.report.notes.append(f"{row or name}: {library} is not installed, reference row skipped")
        # the slow rows warm up on one image: enough for lazy initialisation at a fraction of the cost
        warm_images = images[:1] if name in HEAVY or subject is not self.cnn else images
        if library is not None and reference_available(library) and name in PERTURBATION:
            ref = self.fastest(perturbation_references(name, subject.ref_model, explainer.methods[0].method,
                                                       (lo.flatten(), hi.flatten())),
                               explainer, warm_images, batch, subject)
        elif library is not None and reference_available(library):
            grid = subject.size // 16 if subject is not self.cnn else 0
            ref = make_reference(name, subject.ref_model, module, size=subject.size,
                                 reshape_transform=vit_reshape_transform(grid) if grid else None,
                                 baseline=lo, top=hi, stdev=0.15 * float((hi - lo).mean()),
                                 chunk_size=options.get("chunk_size", 64), reduce=self._pixel_maps(explainer))
        try:
            ours = self.engine_fn(explainer, images, batch)
            ref_run = self.reference_fn(ref, explainer, images, batch, subject) if ref else None
            warm = (self.engine_fn(explainer, warm_images, batch),
                    self.reference_fn(ref, explainer, warm_images, batch, subject) if ref else None)
            ta, tb = measure_pair(ours, ref_run, n, repeats, self.device, warm)
            agreement = None
            if tb is not None:
                mine = torch.cat([m[:, 0] for m in ta.last]).float()
                theirs = torch.cat([ref.to_maps(o) for o in tb.last])
                agreement = pearson(mine, theirs)
        finally:
            if ref is not None:
                ref.close()
        ratio = ta.rate / tb.rate if tb is not None else None
        self.add(Row(row or name, subject.name, subject.size, batch, n, ta.rate, ref.name if ref else "-",
                     tb.rate if tb else None, ratio, f">= {target:g}x" if target else "",
                     (ratio >= target) if (target and ratio) else None, agreement,
                     "reference maps" if agreement is not None else "",
                     note="; ".join(filter(None, [f"layer {layer}" if layer else "",
                                                  "" if library else "no reference library implements it",
                                                  NOTES.get(name, "")])),
                     seconds={"xaicli": ta.seconds, **({"reference": tb.seconds} if tb else {})}))
        if name == "scorecam":
            self.scorecam_max_n_row(ta, tb, images, batch, repeats)

    def fastest(self, candidates: list[Reference], explainer, images: Tensor, batch: int,
                subject: Subject | None = None) -> Reference | None:
        """The candidate (e.g. one per Captum ``perturbations_per_eval``) that explains ``images`` fastest,
        each timed once after a warm-up on them; the others are closed."""
        if len(candidates) <= 1:
            return candidates[0] if candidates else None
        seconds = []
        for ref in candidates:
            run = self.reference_fn(ref, explainer, images, batch, subject)
            run()
            sync(self.device)
            t0 = time.perf_counter()
            run()
            sync(self.device)
            seconds.append(time.perf_counter() - t0)
            self.log(f"  {ref.name}: {seconds[-1]:.2f}s on {images.shape[0]} image(s)")
        best = min(range(len(candidates)), key=seconds.__getitem__)
        for i, ref in enumerate(candidates):
            if i != best:
                ref.close()
        return candidates[best]

    def reference_fn(self, ref, explainer, images: Tensor, batch: int, subject: Subject | None = None
                     ) -> Callable[[], list]:
        """The reference library on the same images, normalised, with targets computed beforehand."""
        x = self.normalised(explainer, images)
        xs, ts = _chunks(x, batch), self.targets(x, batch, subject)

        def run() -> list:
            return [ref.run(c, t) for c, t in zip(xs, ts, strict=True)]

        return run

    def scorecam_max_n_row(self, full: Timing, ref_timing: Timing | None, images: Tensor, batch: int,
                           repeats: int) -> None:
        opts = self.opts
        explainer = self.explainer("scorecam", {**COMPARISONS["scorecam"][0], "max_n": SCORECAM_MAX_N})
        fast = self.engine_fn(explainer, images, batch)
        ta, _ = measure_pair(fast, None, images.shape[0], repeats, self.device,
                             (self.engine_fn(explainer, images[:1], batch),))
        agreement = pearson(torch.cat([m[:, 0] for m in ta.last]), torch.cat([m[:, 0] for m in full.last]))
        ratio = ta.rate / ref_timing.rate if ref_timing else None
        self.add(Row(f"scorecam max_n={SCORECAM_MAX_N}", opts.model, opts.size, batch, images.shape[0],
                     ta.rate, "pytorch-grad-cam ScoreCAM (all channels)" if ref_timing else "-",
                     ref_timing.rate if ref_timing else None, ratio, f">= {SCORECAM_MAX_N_TARGET:g}x",
                     (ratio >= SCORECAM_MAX_N_TARGET) if ratio else None, agreement,
                     "xaicli Score-CAM on all channels", seconds={"xaicli": ta.seconds}))

    def topk_row(self) -> None:
        """Grad-CAM for the top-3 classes against top-1: explain + overlays, same images."""
        opts = self.opts
        images = self.images[: opts.images]
        one = self.engine_fn(self.explainer("gradcam", {}, topk=1), images, opts.batch, render=True)
        three = self.engine_fn(self.explainer("gradcam", {}, topk=3), images, opts.batch, render=True)
        t3, t1 = measure_pair(three, one, images.shape[0], opts.repeats, self.device)
        cost = t3.median / t1.median
        self.add(Row("gradcam top-3 vs top-1", opts.model, opts.size, opts.batch, images.shape[0], t3.rate,
                     "xaicli gradcam top-1", t1.rate, cost, f"< {TOPK_LIMIT:g}x cost", cost < TOPK_LIMIT,
                     note="ratio = time(top-3) / time(top-1), explain + overlays",
                     seconds={"top3": t3.seconds, "top1": t1.seconds}))

    def _pixel_maps(self, explainer) -> Callable[[Tensor], Tensor]:
        """Captum's raw (B, C, H, W) attributions -> (B, H, W) maps post-processed like xaicli's."""
        method = explainer.methods[0].method

        def reduce(attr: Tensor) -> Tensor:
            if hasattr(method, "postprocess"):
                return method.postprocess(attr[:, None])[:, 0]
            return attr.abs().amax(dim=1)

        return reduce


def run_benchmark(opts: BenchOptions, log: Callable[[str], None] = print) -> BenchReport:
    """Run the rows in ``opts.methods`` (all by default) and return the report."""
    if opts.methods:
        unknown = [m for m in opts.methods if m not in ALL_ROWS]
        if unknown:
            from xaicli.errors import UnknownNameError

            raise UnknownNameError("benchmark row", unknown[0], ALL_ROWS)
    rows = list(opts.methods or default_rows())
    suite = Suite(opts, log)
    if opts.is_quick:
        suite.report.notes.append("quick run: too few images and repeats to judge the targets (start-up "
                                  "dominates the end-to-end row); run without --quick for the table")
    for lib, what in ((PGC, "pytorch-grad-cam"), (CAPTUM, "Captum"), (TORCHCAM, "torchcam")):
        if not reference_available(lib):
            suite.report.notes.append(f"{what} ({lib}) is not importable: its reference rows are skipped")
    return suite.run(rows)
