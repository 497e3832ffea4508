"""``Input()`` and the ``FieldInfo`` record it returns.

A model author writes ``prompt: str = Input(description="...")`` as a default
value; the schema builder and the worker later read the ``FieldInfo`` back
from the function signature.  ``FieldInfo`` is a frozen dataclass so a single
instance can safely sit in a function's ``__defaults__`` shared by every call.

Where minicog differs from Cog: Cog's ``Input()`` defaults ``default`` to
``None`` and therefore cannot tell "no default" (required) from "default is
None" (optional).  minicog uses the sentinel :data:`MISSING` for "no default",
so ``Input(default=None)`` really means optional - the idiom
``seed: int = Input(default=None)`` then behaves as model authors expect
(cog-behaviour.md section 18).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, List, Optional, Union

__all__ = ["Input", "FieldInfo", "MISSING"]


class _Missing:
    """Type of :data:`MISSING`; a singleton that survives copy and pickle."""

    _instance: Optional["_Missing"] = None

    def __new__(cls) -> "_Missing":
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        # Pickled by reference to the module-level name, so identity survives.
        return "MISSING"

    def __copy__(self) -> "_Missing":
        return self

    def __deepcopy__(self, memo: dict) -> "_Missing":
        return self


#: ``FieldInfo.default is MISSING`` means the input is required.
MISSING: Any = _Missing()


@dataclasses.dataclass(frozen=True)
class FieldInfo:
    """Metadata of one run()/predict() input, as written with ``Input(...)``."""

    default: Any = MISSING
    description: Optional[str] = None
    ge: Optional[Union[int, float]] = None
    le: Optional[Union[int, float]] = None
    min_length: Optional[int] = None
    max_length: Optional[int] = None
    regex: Optional[str] = None
    choices: Optional[List[Union[str, int]]] = None
    deprecated: Optional[bool] = None
    accept: Optional[str] = None

    @property
    def required(self) -> bool:
        """True when no default was given."""
        return self.default is MISSING


def Input(  # noqa: N802 - Cog's public name
    default: Any = MISSING,
    *,
    default_factory: Optional[Callable[..., Any]] = None,
    description: Optional[str] = None,
    ge: Optional[Union[int, float]] = None,
    le: Optional[Union[int, float]] = None,
    min_length: Optional[int] = None,
    max_length: Optional[int] = None,
    regex: Optional[str] = None,
    choices: Optional[List[Union[str, int]]] = None,
    deprecated: Optional[bool] = None,
    accept: Optional[str] = None,
) -> Any:
    """Describe an input: default, description and constraints.

    ``accept`` takes the HTML ``accept`` attribute syntax (``"image/*"``,
    ``".safetensors,.bin"``) and is published as ``x-cog-accept``.
    """
    if default_factory is not None:
        # Same text as Cog so users searching the message find Cog's docs.
        raise TypeError(
            "default_factory is not supported in Input(). "
            "Use a literal default value instead: Input(default=...). "
            "Mutable defaults like lists should use immutable alternatives "
            "(e.g. a comma-separated string) or be constructed in predict()."
        )
    return FieldInfo(
        default=default,
        description=description,
        ge=ge,
        le=le,
        min_length=min_length,
        max_length=max_length,
        regex=regex,
        choices=choices,
        deprecated=deprecated,
        accept=accept,
    )
