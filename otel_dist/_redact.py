"""Credentials out of anything printed: URL userinfo and credential-like query values.

Used by the startup dump, warnings that name a URL (JWKS sources, endpoints) and the
client span's ``url.full``.  The contrib helper redacts userinfo and a few signature
parameters only; this adds every parameter whose name says it carries a credential.
"""

from __future__ import annotations

import re

__all__ = ["REDACTED", "redact_text", "redact_url"]

REDACTED = "REDACTED"
# Query parameters whose values are credentials.
_SECRET_QUERY = re.compile(
    r"([?&;](?:[\w.-]*(?:token|secret|password|passwd|api[_-]?key|apikey|signature|credential|session)[\w.-]*"
    r"|key|code|auth|sig)=)[^&;#\s]*",
    re.IGNORECASE,
)
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/?#@\s]*@")
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+")


def redact_url(url: str) -> str:
    """`url` with userinfo and the values of credential-like query parameters replaced by REDACTED."""
    url = _USERINFO.sub(rf"\g<scheme>{REDACTED}:{REDACTED}@", url)
    return _SECRET_QUERY.sub(rf"\1{REDACTED}", url)


def redact_text(text: str) -> str:
    """Every URL inside `text` redacted like :func:`redact_url`."""
    if "://" not in text:
        return text
    return _URL.sub(lambda m: redact_url(m.group(0)), text)
