"""Everything written to OUTDIR: file layout, atomic writes, the manifest and run.json."""
