"""jit-dispatch: turn CI runners into workers for a jit issue tracker."""

__version__ = "0.1.0"
