"""Rules about one run that every owner of a run record shares (docs/architecture.rst).

The HTTP service's :class:`~minicog.server.prediction.Prediction` and the
embedding API's :class:`~minicog.embed.PredictionHandle` both keep a run's
status, metrics and output; the rules for those live here once so the two can
never drift apart: the status names, Cog's metric merge, and the output shape
read from the schema.
"""

from __future__ import annotations

from typing import Any, Optional

__all__ = ["STATUSES", "TERMINAL_STATUSES", "merge_metric", "output_schema", "output_is_array", "shape_output"]

#: Cog's prediction statuses, in the order a run goes through them.
STATUSES = ("starting", "processing", "succeeded", "failed", "canceled")
TERMINAL_STATUSES = frozenset({"succeeded", "failed", "canceled"})

_MISSING = object()


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def merge_metric(metrics: dict, name: str, value: Any, mode: str) -> None:
    """Apply one recorded metric operation to *metrics* in place (Cog's parent-side merge).

    ``replace`` (``None`` deletes), ``increment`` (missing starts at 0, non-numeric
    values ignored), ``append`` (missing → ``[]``, a scalar ``x`` → ``[x, v]``);
    dotted names nest, replacing non-object intermediates.
    """
    parts = name.split(".")
    node = metrics
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            if value is None and mode == "replace":
                return  # deleting below a missing branch: nothing to do
            child = {}
            node[part] = child
        node = child
    leaf = parts[-1]
    if mode in ("increment", "incr"):
        if not _is_number(value):
            return
        current = node.get(leaf, 0)
        if not _is_number(current):
            return
        node[leaf] = current + value
    elif mode == "append":
        current = node.get(leaf, _MISSING)
        if current is _MISSING:
            node[leaf] = [value]
        elif isinstance(current, list):
            current.append(value)
        else:
            node[leaf] = [current, value]
    else:
        if value is None:
            node.pop(leaf, None)
        else:
            node[leaf] = value


def output_schema(schema: Optional[dict], mode: str = "predict") -> Optional[dict]:
    """The schema component describing the output (``TrainingOutput`` in train mode, if present)."""
    schemas = ((schema or {}).get("components") or {}).get("schemas") or {}
    out = schemas.get("TrainingOutput") if mode == "train" else None
    out = out if isinstance(out, dict) else schemas.get("Output")
    return out if isinstance(out, dict) else None


def output_is_array(schema: Optional[dict], mode: str = "predict") -> Optional[bool]:
    """Whether the output is a list/iterator (None when the schema does not say)."""
    out = output_schema(schema, mode)
    if out is None:
        return None
    return out.get("type") == "array"


def shape_output(items: list, *, array: bool) -> Any:
    """Cog's wrapping of the items a run produced: a list for array outputs, else
    no item → ``None``, one item → that item, several → the list."""
    if array:
        return list(items)
    if len(items) == 1:
        return items[0]
    return list(items) or None
