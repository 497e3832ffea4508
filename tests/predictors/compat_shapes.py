"""Annotation shapes real Cog models use: opaque lists and a bare Optional without a default."""

from typing import Annotated, List, Optional

from cog import BaseModel, BasePredictor, Opaque


class Blob:
    """A type the schema cannot describe; Opaque says to pass its JSON through untouched."""


class Summary(BaseModel):
    first: Annotated[Blob, Opaque]
    rest: Annotated[List[Blob], Opaque]
    maybe: Annotated[Optional[Blob], Opaque]


class Predictor(BasePredictor):
    def predict(
        self,
        records: Annotated[List[Blob], Opaque],
        note: Optional[str],
    ) -> Summary:
        return Summary(first=records[0], rest=records[1:], maybe=None if note is None else {"note": note})
