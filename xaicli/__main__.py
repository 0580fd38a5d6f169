"""``python -m xaicli`` (also what ``torchrun -m xaicli`` runs)."""

from xaicli.cli.app import main

main()
