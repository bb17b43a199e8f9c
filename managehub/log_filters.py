"""Logging filters, importable while logging is configured (before apps are ready)."""
import re


class RedactOAuthQuery:
    """Logging filter: the access log line of the OAuth callback holds the code and state; hide them."""

    PATTERN = re.compile(r"((?:^|[?&])(?:code|state|code_verifier|access_token|refresh_token)=)[^&\s\"]*")

    def filter(self, record):
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - never break logging
            return True
        redacted = self.PATTERN.sub(r"\1[redacted]", message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True


