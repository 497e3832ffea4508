"""An object output whose fields have defaults: Cog lists only the fields without one as required."""

from typing import Optional

from cog import BaseModel, BasePredictor


class Result(BaseModel):
    text: str
    confidence: float = 0.0
    debug: bool = False
    note: Optional[str] = None


class Predictor(BasePredictor):
    def predict(self, text: str, confidence: Optional[float] = None) -> Result:
        if confidence is None:
            return Result(text=text)
        return Result(text=text, confidence=confidence, debug=True)


try:
    from pydantic import BaseModel as PydanticModel
except ImportError:  # the test skips this class when pydantic is missing
    PydanticModel = None

if PydanticModel is not None:

    class PydanticResult(PydanticModel):
        text: str
        count: int = 0

    class PydanticPredictor(BasePredictor):
        def predict(self, text: str) -> PydanticResult:
            return PydanticResult(text=text, count=len(text))
