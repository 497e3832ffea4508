"""Prediction deadlines and bounded sync waits, spelled as Replicate's hosted API spells them.

* ``Cancel-After: <duration>`` on ``POST``/``PUT`` (or the server-wide
  ``Settings.default_deadline``, ``MINICOG_DEFAULT_DEADLINE``): the prediction is
  canceled when the deadline passes while it runs, and never started if it has
  passed before the prediction could start (a request that waited for a slot
  counts from its arrival).  Durations are Go-style, as
  Replicate's: a sequence of ``<number><unit>`` with units ``h``, ``m``, ``s``,
  ``ms``, ``us`` (or ``µs``) and ``ns`` (``30s``, ``1m``, ``1h30m``, ``1.5s``), or a
  plain number of seconds (``30``).  The value must be positive.
* ``Prefer: wait=N`` (RFC 7240, N whole seconds) on a sync request: the answer
  comes after at most N seconds, with the prediction as it is then (``202`` and
  ``processing`` if it has not finished: it goes on, and its webhooks are
  delivered); ``Prefer: wait`` alone is Cog's sync wait.

A malformed value is a 400 whose JSON ``error`` names the header.
"""

from __future__ import annotations

from typing import Optional

from minicog.errors import RequestError
from minicog.settings import parse_duration

__all__ = ["parse_duration", "cancel_after", "prefer_wait", "format_duration"]

def cancel_after(values: list[str]) -> Optional[float]:
    """The ``Cancel-After`` header's seconds (None if absent); RequestError (400) if malformed."""
    if not values:
        return None
    if len(values) > 1 and len(set(v.strip() for v in values)) > 1:
        raise RequestError("Invalid Cancel-After header: it was sent more than once with different values")
    try:
        return parse_duration(values[0])
    except ValueError as exc:
        raise RequestError(f"Invalid Cancel-After header: {exc}") from None


def prefer_wait(prefer: dict[str, Optional[str]]) -> Optional[float]:
    """Seconds of ``Prefer: wait=N`` (None for no bound: absent, or ``wait`` alone); 400 if malformed."""
    if "wait" not in prefer:
        return None
    raw = prefer["wait"]
    if raw is None or raw == "":
        return None  # Prefer: wait (no value): Cog's sync wait, unbounded
    if not raw.isascii() or not raw.isdigit() or len(raw) > 9:
        raise RequestError(f"Invalid Prefer header: wait={raw!r} is not a whole number of seconds (RFC 7240)")
    return float(int(raw))


def format_duration(seconds: float) -> str:
    """A short human form for log lines (``90s`` → ``1m30s``)."""
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    whole = int(seconds)
    if whole != seconds or whole < 60:
        return f"{seconds:g}s"
    h, rest = divmod(whole, 3600)
    m, s = divmod(rest, 60)
    return "".join(f"{n}{u}" for n, u in ((h, "h"), (m, "m"), (s, "s")) if n) or "0s"
