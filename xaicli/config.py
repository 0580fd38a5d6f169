"""YAML config -> typed, validated config.

Every key has a default; every error names the key path (``methods[0].layers``) and, for names, lists
the valid choices and close matches. Validation here is structural (types, allowed values, files that
must exist); names that need the model (layers, class names) are checked when the model is loaded.

A single value where a list is expected is read as a one-item list (``layers: features.1.bn``,
``size: 224``). YAML anchors and aliases are allowed, but a config whose aliases would expand beyond
:data:`MAX_ALIASES` references or :data:`MAX_NODES` values (an "alias bomb": a few hundred bytes that
expand to billions of items) is refused before it is expanded.

A config can name a Python factory (``model.factory``) and xaicli runs it: **a config from someone else
is code**; read it before you run it.
"""

from __future__ import annotations

import dataclasses
import reprlib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from xaicli.errors import ConfigError, UsageError, format_choices, not_allowed

Source = Literal["builtin", "torchvision", "torchscript", "python"]

#: Colormaps ``output.colormap`` accepts. The schema owns the names so that validating a config needs
#: neither torch nor the renderer; ``xaicli.render.colormaps`` holds a table for each (a test checks).
COLORMAP_NAMES: tuple[str, ...] = ("jet", "viridis", "inferno", "magma", "gray", "hot", "coolwarm", "bwr")


@dataclass
class ModelConfig:
    source: Source = "builtin"
    name: str | None = "fashion_mnist_cnn"
    checkpoint: str | None = None
    path: str | None = None
    factory: str | None = None
    num_classes: int | None = None
    classes: list[str] | str | None = None


@dataclass
class PreprocessConfig:
    """``None`` means: take the model's own default (builtin models) or ImageNet's (torchvision)."""

    size: list[int] | None = None
    mode: Literal["L", "RGB"] | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    resize: Literal["exact", "shorter"] = "exact"
    alpha_background: Literal["black", "white"] = "black"


@dataclass
class MethodConfig:
    name: str = "gradcam"
    layers: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class TargetsConfig:
    """Which classes each image's maps explain (each one a *slot*, named in the manifest and file names).

    topk: the K highest-scoring classes (slots ``top1`` ... ``topK``; default: top-1 when nothing else
    is asked for); classes: fixed classes, by name or index (slots ``class<index>``; not with topk);
    true_class: also (or, alone, only) the image's labelled class (slot ``true``): targets that do not
    move with the model, for comparing runs of two models. The label is a row of ``labels`` or else the
    image's folder name when it names a class; an image with neither gets no ``true`` map (a warning
    lists them). labels: a CSV file with a header row and columns ``image,label``: ``image`` is the
    image's path relative to its input folder (the manifest's ``rel``, e.g. ``Bag/img_00030.png``),
    ``label`` a class name or index; it wins over the folder name, also for the manifest's ``label`` and
    the summary's accuracy.
    """

    topk: int | None = None
    classes: list[int | str] | None = None
    true_class: bool = False
    labels: str | None = None


@dataclass
class OutputConfig:
    """What is written per explanation and how overlays look.

    overlays / maps: write the heatmap overlay (PNG) / the raw float32 map (``.npy``); colormap, alpha,
    overlay_scale: the overlay's colours, opacity and upscaling; names: how an explanation's files are
    named: ``class`` (``top1_Bag.png``, ``class7_Sneaker.png``, ``true_Bag.png``: slot and class) or
    ``slot`` (``top1.png``, ``class7.png``, ``true.png``: the slot only, so the file names of two runs
    match even where the predictions differ; the class stays in the manifest).
    """

    overlays: bool = True
    maps: bool = True
    colormap: str = "jet"
    alpha: float = 0.5
    overlay_scale: int = 1
    names: Literal["class", "slot"] = "class"


@dataclass
class FiguresConfig:
    """Figures and the HTML report (see ``xaicli.runs.figures``, ``xaicli.runs.sweep``).

    topk: write ``figures/topk/<class>.png`` (originals, then one overlay row per target rank);
    images_per_class: images (columns) per class figure, the first ones in discovery order;
    compare: write ``compare/<image>.png`` (original + every method/layer) for those images;
    html: write ``OUTDIR/index.html`` after ``explain`` and ``sweep``;
    cell_size: width in pixels of one figure cell (small inputs are upscaled to it; text follows it);
    resample: how images and maps are upscaled to ``cell_size``: nearest | bicubic;
    normalise: colour scale of the maps in figures: per_map (each map min..max) | row (one scale per
    figure row; meaningful with raw maps, e.g. ``options: {normalise: false}`` for CAM methods).
    """

    topk: bool = False
    images_per_class: int = 8
    compare: bool = False
    html: bool = True
    cell_size: int = 112
    resample: Literal["nearest", "bicubic"] = "nearest"
    normalise: Literal["per_map", "row"] = "per_map"


@dataclass
class RunConfig:
    device: str = "auto"
    batch_size: int = 64
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    workers: int | None = None
    compile: bool = False


@dataclass
class GatesConfig:
    """Quality gates of ``xaicli evaluate`` (exit code 3 when one fails), metric name -> threshold.

    fail_under: fail when a (method, layer)'s mean is below the threshold (metrics where higher is better,
    e.g. insertion); fail_over: fail when it is above (e.g. deletion, mprt).
    """

    fail_under: dict[str, float] = field(default_factory=dict)
    fail_over: dict[str, float] = field(default_factory=dict)


@dataclass
class EvaluateConfig:
    """``xaicli evaluate`` (see ``xaicli.runs.evaluate``).

    metrics: metric names (``xaicli evaluate --help`` lists them); options: per-metric options,
    e.g. ``{deletion: {steps: 50}}``; masks: object masks for the localisation metrics (a folder of
    ``<image path relative to its input folder, without suffix>.png``, or a JSON / CSV file of boxes);
    gates: see :class:`GatesConfig`; figure_images: images shown in the cascading-randomisation figure.
    """

    metrics: list[str] = field(default_factory=lambda: ["deletion", "insertion", "sparseness"])
    options: dict[str, Any] = field(default_factory=dict)
    masks: str | None = None
    gates: GatesConfig = field(default_factory=GatesConfig)
    figure_images: int = 3


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    methods: list[MethodConfig] = field(default_factory=lambda: [MethodConfig()])
    targets: TargetsConfig = field(default_factory=TargetsConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    figures: FiguresConfig = field(default_factory=FiguresConfig)
    run: RunConfig = field(default_factory=RunConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    base_dir: Path = field(default=Path("."), metadata={"internal": True})

    def resolve_path(self, value: str) -> Path:
        """Paths in a config are relative to the config file's folder."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else (self.base_dir / p)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("base_dir")
        return d


# --- generic validation ------------------------------------------------------------------------------

def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin is list:
        return f"list of {_type_name(get_args(tp)[0])}"
    if origin is dict:
        return "mapping"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str, wrap: bool = True) -> Any:
    """``value`` checked against the type ``tp`` (``wrap``: a scalar where a list is expected is read
    as a one-item list)."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for allow_wrap in (False, True) if wrap else (False,):  # a type that takes the value as it is wins
            for arg in args:
                if arg is type(None):
                    continue
                try:
                    return _coerce(value, arg, key, allow_wrap)
                except ConfigError as err:
                    errors.append(err)
        if len({str(e) for e in errors}) == 1:
            raise errors[0]
        raise ConfigError(key, f"expected {_type_name(tp)}, got {_shown(value)}")
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ConfigError(key, not_allowed(value, allowed))
        return value
    if origin is list:
        if wrap and isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [value]  # `layers: features.1.bn`, `size: 224`
        if not isinstance(value, list):
            raise ConfigError(key, f"expected {_type_name(tp)}, got {_shown(value)}")
        return [_coerce(v, get_args(tp)[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(key, f"expected a mapping, got {_shown(value)}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float) and isinstance(value, bool):
        raise ConfigError(key, f"expected {tp.__name__}, got {value!r}")
    if not isinstance(value, tp):
        raise ConfigError(key, f"expected {_type_name(tp)}, got {_shown(value)} ({type(value).__name__})")
    return value


def _shown(value: Any, limit: int = 120) -> str:
    """``repr(value)`` for an error message, cut to ``limit`` characters (a value may be large)."""
    short = reprlib.Repr()
    short.maxlevel, short.maxlist, short.maxdict, short.maxstring, short.maxother = 3, 6, 6, limit, limit
    text = short.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _build(cls: type, data: Any, key: str) -> Any:
    where = key or "top level"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(where, f"expected a mapping of keys, got {_shown(data)}")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls) if not f.metadata.get("internal")]
    kwargs = {}
    for k, v in data.items():
        sub = f"{key}.{k}" if key else str(k)
        if k not in known:
            raise ConfigError(sub, f"unknown key; {format_choices(str(k), known)}")
        kwargs[k] = _coerce(v, hints[k], sub)
    return cls(**kwargs)


def _check(cfg: Config) -> None:
    """Value checks that types alone cannot express."""
    m = cfg.model
    need = {"torchvision": "name", "torchscript": "path", "python": "factory", "builtin": "name"}[m.source]
    if getattr(m, need) is None:
        raise ConfigError(f"model.{need}", f"required when model.source is {m.source!r}")
    for name in ("checkpoint", "path"):
        value = getattr(m, name)
        if value is not None and not cfg.resolve_path(value).is_file():
            raise ConfigError(f"model.{name}", f"file not found: {cfg.resolve_path(value)}")
    if isinstance(m.classes, str) and not cfg.resolve_path(m.classes).is_file():
        raise ConfigError("model.classes", f"class-name file not found: {cfg.resolve_path(m.classes)}")
    p = cfg.preprocess
    if p.size is not None and (len(p.size) not in (1, 2) or min(p.size) < 1):
        raise ConfigError("preprocess.size", f"expected [H, W] (or [S]) of positive ints, got {p.size}")
    for name in ("mean", "std"):
        v = getattr(p, name)
        if v is not None and len(v) not in (1, 3):
            raise ConfigError(f"preprocess.{name}", f"expected 1 or 3 values, got {len(v)}")
    if p.std is not None and min(p.std) <= 0:
        raise ConfigError("preprocess.std", "values must be > 0")
    if not cfg.methods:
        raise ConfigError("methods", "list at least one method")
    t = cfg.targets
    if t.topk is not None and t.classes is not None:
        raise ConfigError("targets", "give either 'topk' or 'classes', not both")
    if t.topk is not None and t.topk < 1:
        raise ConfigError("targets.topk", f"must be >= 1, got {t.topk}")
    if t.classes is not None and not t.classes:
        raise ConfigError("targets.classes", "list at least one class (index or name)")
    if t.labels is not None and not cfg.resolve_path(t.labels).is_file():
        raise ConfigError("targets.labels", f"labels file not found: {cfg.resolve_path(t.labels)}")
    o = cfg.output
    if not 0.0 <= o.alpha <= 1.0:
        raise ConfigError("output.alpha", f"must be between 0 and 1, got {o.alpha}")
    if o.overlay_scale < 1:
        raise ConfigError("output.overlay_scale", "must be >= 1")
    if o.colormap not in COLORMAP_NAMES:
        raise ConfigError("output.colormap", f"unknown colormap {o.colormap!r}; "
                          + format_choices(o.colormap, COLORMAP_NAMES))
    r = cfg.run
    if r.batch_size < 1:
        raise ConfigError("run.batch_size", f"must be >= 1, got {r.batch_size}")
    if r.workers is not None and r.workers < 0:
        raise ConfigError("run.workers", "must be >= 0")
    if r.device != "auto" and r.device != "cpu" and not r.device.startswith(("cuda", "mps")):
        raise ConfigError("run.device", f"expected auto, cpu, cuda or cuda:N, got {r.device!r}")
    if cfg.figures.images_per_class < 1:
        raise ConfigError("figures.images_per_class", "must be >= 1")
    if not 16 <= cfg.figures.cell_size <= 1024:
        raise ConfigError("figures.cell_size", f"must be 16..1024 pixels, got {cfg.figures.cell_size}")
    _check_evaluate(cfg.evaluate)


def _check_evaluate(e: EvaluateConfig) -> None:
    """Shapes only: metric names and their options are checked against the metric registry when the
    command plans its work (``xaicli.runs.evaluate``), before anything runs."""
    if not e.metrics:
        raise ConfigError("evaluate.metrics", "list at least one metric")
    for name, opts in e.options.items():
        if not isinstance(opts, dict):
            raise ConfigError(f"evaluate.options.{name}",
                              f"expected a mapping of option: value, got {opts!r}")
    for kind in ("fail_under", "fail_over"):
        for name, value in getattr(e.gates, kind).items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"evaluate.gates.{kind}.{name}", f"expected a number, got {value!r}")
    if e.figure_images < 0:
        raise ConfigError("evaluate.figure_images", f"must be >= 0, got {e.figure_images}")


def apply_overrides(cfg: Config, *, methods: list[str] | None = None, layers: list[str] | None = None,
                    topk: int | None = None, device: str | None = None,
                    batch_size: int | None = None) -> None:
    """Command-line choices replace the config's.

    ``--method``: a method named on the command line keeps the layers and options the config gives it,
    if any. ``--layer``: replaces every method's layers. ``--topk``: replaces fixed ``targets.classes``.
    """
    if methods:
        by_name = {m.name: m for m in cfg.methods}
        cfg.methods = [MethodConfig(name=n, layers=list(by_name[n].layers) if n in by_name else [],
                                    options=dict(by_name[n].options) if n in by_name else {})
                       for n in methods]
    if layers:
        for m in cfg.methods:
            m.layers = list(layers)
    if topk is not None:
        cfg.targets.topk, cfg.targets.classes = topk, None
    if device is not None:
        cfg.run.device = device
    if batch_size is not None:
        cfg.run.batch_size = batch_size


def config_from_dict(data: dict[str, Any] | None, base_dir: Path = Path(".")) -> Config:
    cfg = _build(Config, data or {}, "")
    cfg.base_dir = base_dir
    model = (data or {}).get("model") or {}
    if cfg.model.source != "builtin" and isinstance(model, dict) and "name" not in model:
        cfg.model.name = None  # the demo model's name is the default of `source: builtin` only
    _check(cfg)
    return cfg


MAX_ALIASES = 100
"""More alias references (``*name``) than this in one config is refused."""
MAX_NODES = 100_000
"""More values than this once every alias is expanded is refused (real configs have a few hundred)."""


def _bounded_yaml(text: str, path: Path) -> Any:
    """``yaml.safe_load``, but the node graph is measured before anything is built from it: a config with
    too many aliases or whose expansion would be too large raises :class:`UsageError` (an alias bomb
    costs nothing here, where loading it would exhaust memory)."""
    import yaml

    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        aliases, size = _measure(node)
        if aliases > MAX_ALIASES or size > MAX_NODES:
            raise UsageError(f"config file {path} uses {aliases} YAML alias reference(s) expanding to "
                             f"{size if size <= 10**12 else 'more than 10^12'} values (limits: {MAX_ALIASES} "
                             f"aliases, {MAX_NODES} values); write the values out instead")
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _measure(root: Any) -> tuple[int, int]:
    """(alias references, values after expansion) of a YAML node graph; a node reached again is an
    alias. Sizes are computed once per node (memoised), so this is linear in the file, whatever it expands
    to; a recursive alias counts as unbounded."""
    import yaml

    seen: set[int] = set()
    aliases = 0
    size: dict[int, int] = {}
    on_path: set[int] = set()

    def walk(node: Any) -> int:
        nonlocal aliases
        ident = id(node)
        if ident in on_path:
            return MAX_NODES + 1  # a recursive structure never ends
        if ident in seen:
            aliases += 1
            return size.get(ident, MAX_NODES + 1)
        seen.add(ident)
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            children = []
        on_path.add(ident)
        total = 1 + sum(walk(child) for child in children)
        on_path.discard(ident)
        size[ident] = min(total, 10**13)
        return size[ident]

    total = walk(root)
    return aliases, total


def load_config(path: str | Path | None) -> Config:
    """Read and validate a YAML config; ``None`` gives the defaults (the bundled demo model)."""
    if path is None:
        return config_from_dict({})
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"config file not found: {path}")
    try:
        data = _bounded_yaml(path.read_text(encoding="utf-8"), path)
    except yaml.YAMLError as err:
        mark, problem = getattr(err, "problem_mark", None), getattr(err, "problem", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        why = " ".join(str(problem or err).split())  # one line, whatever PyYAML's layout
        raise UsageError(f"config file {path} is not valid YAML: {where}{why}") from err
    except UnicodeDecodeError as err:
        raise UsageError(f"config file {path} is not UTF-8 text: {err.reason} at byte {err.start}") from err
    except RecursionError as err:
        raise UsageError(f"config file {path} is nested too deeply to be a config") from err
    return config_from_dict(data, base_dir=path.resolve().parent)
