"""Domain errors: raised by rules and services, mapped to HTML or JSON in one handler.

Pure on purpose (no Flask import) so `rules.py` modules can raise them too.
"""
from __future__ import annotations

from collections.abc import Mapping


class DomainError(Exception):
    """A refusal the user can understand and act on; never a programming error."""

    status = 400
    code = "domain_error"

    def __init__(self, message: str, *, fields: Mapping[str, list[str] | str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fields: dict[str, list[str]] = {
            k: ([v] if isinstance(v, str) else list(v)) for k, v in (fields or {}).items()
        }


class ValidationFailed(DomainError):
    status = 422
    code = "validation_failed"


class NotFound(DomainError):
    status = 404
    code = "not_found"


class Conflict(DomainError):
    status = 409
    code = "conflict"


class InvalidTransition(Conflict):
    code = "invalid_transition"


class Forbidden(DomainError):
    status = 403
    code = "forbidden"


class UnsupportedMediaType(DomainError):
    status = 415
    code = "unsupported_media_type"


class NotAuthenticated(DomainError):
    status = 401
    code = "not_authenticated"


class LinkInvalid(DomainError):
    """A patient link that cannot be honoured; `reason` picks the friendly page shown."""

    status = 400
    code = "link_invalid"

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class ConfigError(Exception):
    """Bad deployment settings: reported as one line at start-up."""
