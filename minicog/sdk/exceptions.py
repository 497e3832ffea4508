"""``CancelationException``: what a cancelled prediction sees.

It derives from ``BaseException`` (like ``KeyboardInterrupt``) so that a
model's broad ``except Exception:`` does not swallow a cancel request.
Cog re-exports coglet's class; minicog's ``coglet`` alias re-exports this one,
so ``cog.CancelationException is coglet.CancelationException``.
"""

__all__ = ["CancelationException"]


class CancelationException(BaseException):
    """Raised inside a prediction when it is canceled."""
