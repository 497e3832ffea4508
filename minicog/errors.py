"""The exceptions minicog raises, as one small tree.

Every class carries the HTTP status it maps to (``http_status``), so the HTTP
edge turns any :class:`MinicogError` into a JSON answer with one ``except``
clause, and embedders and the command line get the same classes with messages
that say what to fix.  Exceptions raised *by model code* are never wrapped in
these classes inside the worker; they reach the parent as a failed prediction.

    MinicogError
    ├── ConfigError            cog.yaml cannot be read (names the line)
    ├── LoadError              the predictor reference cannot be loaded
    ├── SchemaError            an annotation or Input() that minicog cannot describe
    ├── RequestError (400)     a malformed request
    │   ├── UnsupportedMediaType (415)
    │   ├── PayloadTooLarge (413)
    │   ├── HeaderTooLarge (431)
    │   ├── NotAcceptable (406)
    │   └── NotFound (404)
    ├── InputValidationError (422)   carries Cog's ``detail`` list
    ├── ServiceUnavailable (503)     setup not finished, failed, defunct or draining
    ├── AtCapacity (409)             every slot busy
    ├── WorkerError                  the worker died or broke the protocol
    ├── OutputError                  an output could not be encoded, stored or uploaded
    ├── InputFetchError              a URL / data: input could not be fetched
    └── PredictionError              (embedding API) a prediction failed or was canceled
        └── PredictionCanceled
"""

from __future__ import annotations

from typing import Any, Optional

__all__ = [
    "MinicogError", "ConfigError", "LoadError", "SchemaError", "RequestError",
    "UnsupportedMediaType", "PayloadTooLarge", "HeaderTooLarge", "NotAcceptable", "NotFound",
    "InputValidationError", "ServiceUnavailable", "AtCapacity", "WorkerError", "OutputError",
    "InputFetchError", "PredictionError", "PredictionCanceled",
]


class MinicogError(Exception):
    """Base class; ``http_status`` is what the HTTP edge answers."""

    http_status = 500

    def body(self) -> dict[str, Any]:
        """The JSON body the HTTP edge sends for this error."""
        return {"error": str(self)}


class ConfigError(MinicogError):
    """cog.yaml is missing something or uses YAML minicog cannot read."""

    def __init__(self, message: str, *, path: Optional[str] = None, line: Optional[int] = None):
        where = f"{path or 'cog.yaml'}" + (f", line {line}" if line else "")
        super().__init__(f"{where}: {message}")
        self.path, self.line = path, line


class LoadError(MinicogError):
    """The predictor reference names a file, class or method that cannot be used."""


class SchemaError(MinicogError):
    """A run()/predict() signature uses a type or Input() option minicog cannot describe."""


class RequestError(MinicogError):
    http_status = 400


class UnsupportedMediaType(RequestError):
    http_status = 415


class PayloadTooLarge(RequestError):
    http_status = 413


class HeaderTooLarge(RequestError):
    http_status = 431


class NotAcceptable(RequestError):
    http_status = 406


class NotFound(RequestError):
    http_status = 404


class InputValidationError(MinicogError):
    """Invalid input; ``detail`` is Cog's list of ``{"loc","msg","type"}`` problems."""

    http_status = 422

    def __init__(self, detail: list[dict[str, Any]]):
        self.detail = list(detail)
        lines = [f"{'.'.join(str(p) for p in d['loc'][2:]) or 'input'}: {d['msg']}" for d in self.detail]
        super().__init__("; ".join(lines) or "invalid input")

    def body(self) -> dict[str, Any]:
        return {"detail": self.detail}


class ServiceUnavailable(MinicogError):
    """The model cannot take predictions now (setting up, failed, defunct or draining)."""

    http_status = 503

    def __init__(self, message: str = "Setup has not finished yet. Wait until it has finished, or GET /health-check for status."):
        super().__init__(message)

    def body(self) -> dict[str, Any]:
        return {"error": str(self), "status": "failed"}


class AtCapacity(MinicogError):
    http_status = 409

    def __init__(self, message: str = "At capacity - all prediction slots busy"):
        super().__init__(message)

    def body(self) -> dict[str, Any]:
        return {"error": str(self), "status": "failed"}


class WorkerError(MinicogError):
    """The worker process died, failed to start, or broke the protocol."""


class OutputError(MinicogError):
    """An output value could not be encoded, read back or uploaded."""


class InputFetchError(MinicogError):
    """A URL or data: input could not be fetched; the message names the input."""


class PredictionError(MinicogError):
    """Raised by the embedding API when a prediction does not succeed."""

    def __init__(self, message: str, *, prediction: Optional[dict[str, Any]] = None):
        super().__init__(message)
        self.prediction = prediction or {}

    @property
    def logs(self) -> str:
        return self.prediction.get("logs", "")


class PredictionCanceled(PredictionError):
    pass
