"""Command line: `jit-dispatch` parses flags, environment and dispatch.toml into one request."""

import gc

# Importing the CLI allocates tens of thousands of objects and frees almost none, so the cyclic
# collector's passes during it find nothing: they only cost start-up time (`once`'s hot path).
_collecting = gc.isenabled()
gc.disable()
try:
    from jit_dispatch.cli.main import main
finally:
    if _collecting:
        gc.enable()

__all__ = ["main"]
