"""Command-line parameters shared by several commands, declared once so their help text agrees."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperCommand

InputsArg = Annotated[list[Path], typer.Argument(
    help="Image files and/or folders (searched recursively for .png .jpg .jpeg .bmp .webp .tif); "
         "class folders give the true class.", show_default=False)]
OutdirOpt = Annotated[Path, typer.Option("--out", "-o", help="Output folder (created if missing).",
                                         show_default=False)]
ConfigOpt = Annotated[Path | None, typer.Option(
    "--config", "-c", help="YAML config (model, preprocessing, methods, targets, outputs, figures). "
                           "Default: the bundled Fashion-MNIST demo model.", show_default=False)]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="auto, cpu, cuda or cuda:N.",
                                               show_default=False)]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print a JSON summary on stdout.")]
JunitOpt = Annotated[Path | None, typer.Option(
    "--junit", help="Also write a JUnit XML report to FILE (any path; folders created): one test case per "
                    "image, failed when the image could not be read or explained (evaluate: also one per "
                    "gate). Written also when the run exits 1 or 3, for CI test displays.",
    metavar="FILE", show_default=False)]
MarkdownOpt = Annotated[Path | None, typer.Option(
    "--markdown", help="Also write a Markdown summary to FILE (images, failures, accuracy, gates), e.g. for "
                       "a GitHub job summary: the file is replaced, so append it in the next step with "
                       "`cat FILE >> \"$GITHUB_STEP_SUMMARY\"`.", metavar="FILE", show_default=False)]

EXIT_CODES_HELP = ("Exit codes: 0 all images done; 1 some inputs could not be read or explained (listed, the "
                   "rest done); 2 usage or config error, or OUTDIR unusable, busy or holding results of "
                   "another configuration (nothing run); 4 the run failed (one line on stderr, the "
                   "traceback in OUTDIR/xaicli-error.log; --debug prints it); 130/143 interrupted by "
                   "Ctrl-C/SIGTERM.")


#: Click's UsageError as Typer raises it (recent Typer versions bundle their own copy of Click).
_CLICK_USAGE_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")


class JsonCommand(TyperCommand):
    """A command with ``--json``: a command-line usage error (``--topk 0``, an unknown option) is also
    answered with a JSON object on stdout, as every other exit is, so a script always gets JSON."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        given = list(args)  # the parser consumes ``args``
        try:
            return super().parse_args(ctx, args)
        except _CLICK_USAGE_ERROR as err:
            if "--json" not in given:
                raise
            from xaicli.cli.errors import fail_usage

            fail_usage(err.format_message(), json_out=True)
