"""Process-wide switches of the SDK that only the worker turns on.

``active()`` is the analogue of ``coglet.server.active``: True only inside the
worker process that runs the model, after the worker has called
``_set_active()``.  Model code uses it to tell "running under the server" from
"imported by a test or a notebook".  A plain module-level flag is enough: it
is set once at worker start-up, before any model code runs, and never reset.
"""

__all__ = ["active"]

_active = False


def active() -> bool:
    """True when running inside a minicog worker process."""
    return _active


def _set_active(value: bool = True) -> None:
    """Called by the worker at start-up (and by tests)."""
    global _active
    _active = bool(value)
