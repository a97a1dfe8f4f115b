"""One error tree for the whole adapter.

Every error carries a stable ``code`` (the gateway's fault code) and data, not only
text.  Only the gateway turns these into SOAP faults; only the CLI turns them into
exit messages.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Issue:
    """One failing place in a document or request."""

    place: str  # element path, e.g. /Voucher/entries/entry[2]/debit
    rule: str  # the schema constraint or business rule that failed
    message: str  # what is wrong and what to fix
    line: int | None = None
    source: str | None = None  # file name or request part

    def __str__(self) -> str:
        where = f"{self.source}:" if self.source else ""
        where += f"{self.line}:" if self.line else ""
        return f"{where} {self.place}: [{self.rule}] {self.message}".strip()


class AdapterError(Exception):
    """Base of every error the adapter raises on purpose."""

    code = "Internal"
    client_error = False  # soap:Client when true, soap:Server otherwise

    def __init__(self, message: str, **data) -> None:
        super().__init__(message)
        self.message = message
        self.data = data


class AuthenticationFailed(AdapterError):
    code = "Authentication"
    client_error = True


class AccessDenied(AdapterError):
    code = "AccessDenied"
    client_error = True


class ValidationFailed(AdapterError):
    code = "Validation"
    client_error = True

    def __init__(self, message: str, issues: list[Issue] | tuple[Issue, ...] = (), **data) -> None:
        super().__init__(message, **data)
        self.issues = tuple(issues)

    def __str__(self) -> str:
        if not self.issues:
            return self.message
        return self.message + "\n" + "\n".join(f"  {issue}" for issue in self.issues)


class NotFound(AdapterError):
    code = "NotFound"
    client_error = True


class Conflict(AdapterError):
    code = "Conflict"
    client_error = True


class RequestTooLarge(AdapterError):
    code = "RequestTooLarge"
    client_error = True


class Unavailable(AdapterError):
    code = "Unavailable"


class InternalError(AdapterError):
    code = "Internal"


class IntegrityError(AdapterError):
    """Stored bytes no longer match their recorded sha256."""

    code = "Internal"


class ConfigurationError(AdapterError):
    code = "Internal"


# --- the machine refusing what the settings ask for ----------------------------------


class EnvironmentRefused(ConfigurationError):
    """A port taken, a folder that cannot be written, a database that does not answer.

    The operator fixes it by changing a setting, so ``fix`` says which one; it is set by
    whoever knows where the value came from (see ``archive_oa.environment``).
    """

    def __init__(self, message: str, *, fix: str = "", **data) -> None:
        super().__init__(message, **data)
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.message} — {self.fix}" if self.fix else self.message


class CannotListen(EnvironmentRefused):
    """No listening socket on ``host``:``port``; ``data["setting"]`` is "host" or "port",
    the one to change (a port already taken, or an address this machine does not have)."""


class FolderUnusable(EnvironmentRefused):
    """A folder the adapter must write (the data folder, the SQLite file's) cannot be created
    or written."""


class DatabaseUnreachable(EnvironmentRefused):
    """The configured database does not accept a connection (down, wrong address, refused)."""


# --- errors of the OA workflow service (the adapter is the client) -----------------


class OaError(Unavailable):
    """The OA call did not succeed.  Subclasses say what it means for the request's fate;
    what each means for a retry and the log is ``adapter/sync/failures.py``'s ``rule_for``."""

    def log_line(self) -> str:
        """The failure class, the operation and the message: an expected failure logs this, never a traceback."""
        return f"{type(self).__name__} in {self.data.get('operation') or 'an OA call'}: {self.message}"


class OaUnreachable(OaError):
    """Nothing reached the OA (connection refused, DNS): the request was not created."""


class OaAmbiguous(OaError):
    """The call may have taken effect (timeout, dropped connection, garbled answer).

    The sync engine asks the OA (FindWorkflowRequests) before sending again.
    """


class OaServerFault(OaError):
    """The OA answered with a server-side fault: retry later (ask first)."""


class OaRejected(OaError):
    """The OA refused the request itself (client fault): resending cannot help."""

    client_error = True


class OaAuthenticationFailed(OaRejected):
    """The OA refused our credentials: configuration must be fixed."""
