"""Structured outputs real models declare: a TypedDict with an optional key, and a pydantic model."""

from typing import List, Optional, TypedDict

from cog import BasePredictor


class _Labelled(TypedDict):
    label: str


class Scored(_Labelled, total=False):
    # total=False: 'score' may be left out of the returned dict
    score: float


class TypedDictPredictor(BasePredictor):
    def predict(self, label: str, score: Optional[float] = None) -> Scored:
        out: Scored = {"label": label}
        if score is not None:
            out["score"] = score
        return out


try:
    from pydantic import BaseModel as PydanticModel
except ImportError:  # the test skips this class when pydantic is missing
    PydanticModel = None

if PydanticModel is not None:
    class Report(PydanticModel):
        title: str
        pages: int
        keywords: List[str]
        editor: Optional[str] = None

    class PydanticPredictor(BasePredictor):
        def predict(self, title: str) -> Report:
            return Report(title=title, pages=len(title), keywords=title.split())
