"""Everything written to OUTDIR and what keeps it consistent: the file layout (every path checked to stay
inside OUTDIR), atomic writes, the manifest and its rows' fingerprints, run.json and its history, the
OUTDIR checks and lock, and the commits that signals cannot split."""
