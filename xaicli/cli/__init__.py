"""Thin Typer commands: parse, call one library function, map typed errors to exit codes.

No torch import at module level here, so ``xaicli --help`` answers instantly.
"""
