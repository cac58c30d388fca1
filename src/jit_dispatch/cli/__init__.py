"""Command line: `jit-dispatch` parses flags, environment and dispatch.toml into one request."""

import gc

# Importing the CLI allocates tens of thousands of objects that live as long as the process and
# hold no garbage: no collector pass during the import, and none walks them afterwards (frozen,
# as `gc.freeze` is meant for). That is start-up time on `once`'s hot path.
_collecting = gc.isenabled()
gc.disable()
try:
    from jit_dispatch.cli.main import main
finally:
    if _collecting:
        gc.freeze()
        gc.enable()

__all__ = ["main"]
