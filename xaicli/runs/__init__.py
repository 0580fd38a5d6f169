"""Use cases: each command's whole flow (read the output folder and inputs, explain, render, write),
composed from the lower layers (engine, render, outputs); nothing below imports from here."""
