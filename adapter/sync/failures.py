"""Why a delivery attempt failed, as an operator fixes it, and the stored text that keeps it.

The OA client already sorts every failure into the ``OaError`` tree by what it says about
the request (``adapter/oa/client.py``); this names those classes for people and adds the
adapter's own failures.  A delivery's ``last_error`` is written by ``error_text`` and read
back by ``failure_class_of``: one format, kept here.
"""

from __future__ import annotations

from ..domain.delivery import FailureClass
from ..errors import (
    IntegrityError,
    NotFound,
    OaAmbiguous,
    OaAuthenticationFailed,
    OaRejected,
    OaServerFault,
    OaUnreachable,
    ValidationFailed,
)

#: Most specific first: credentials refused is a kind of rejection.
_BY_TYPE: tuple[tuple[type[BaseException], FailureClass], ...] = (
    (OaAuthenticationFailed, FailureClass.CREDENTIALS),
    (OaRejected, FailureClass.REJECTED),
    (OaUnreachable, FailureClass.UNREACHABLE),
    (OaServerFault, FailureClass.SERVER_FAULT),
    (OaAmbiguous, FailureClass.AMBIGUOUS),
    (ValidationFailed, FailureClass.CONTENT),
    (NotFound, FailureClass.CONTENT),
    (IntegrityError, FailureClass.CONTENT),
)
_BY_NAME = {kind.__name__: cls for kind, cls in _BY_TYPE}


def failure_class(exc: BaseException) -> FailureClass:
    for kind, cls in _BY_TYPE:
        if isinstance(exc, kind):
            return cls
    return FailureClass.ERROR


def error_text(phase: str, exc: BaseException, reason: str) -> str:
    """``last_error`` of a failed attempt: ``<phase>: <exception type>: <message> (<reason>)``."""
    return f"{phase}: {type(exc).__name__}: {exc} ({reason})"


def failure_class_of(last_error: str | None) -> FailureClass:
    """The class of the failure ``error_text`` wrote; ERROR for any other text."""
    parts = (last_error or "").split(": ", 2)
    return _BY_NAME.get(parts[1], FailureClass.ERROR) if len(parts) == 3 else FailureClass.ERROR
