"""jit-dispatch: turn CI runners into workers for a jit issue tracker."""

__version__ = "1.0.0"
