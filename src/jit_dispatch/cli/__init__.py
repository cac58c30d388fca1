"""Command line: `jit-dispatch` parses flags, environment and dispatch.toml into one request."""

from jit_dispatch.cli.main import main

__all__ = ["main"]
