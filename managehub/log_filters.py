"""Logging filters, importable while logging is configured (before apps are ready)."""

import re


class RedactOAuthQuery:
    """Logging filter: secrets a request line carries are hidden — the OAuth callback's code and
    state (query string) and the iCal feed's secret (its path, `/ical/<secret>.ics`)."""

    PATTERN = re.compile(r"((?:^|[?&])(?:code|state|code_verifier|access_token|refresh_token)=)[^&\s\"]*")
    #: Anything that long after /ical/ is a feed secret (or a mistyped one): `rotate` is the only shorter word there.
    FEED_PATTERN = re.compile(r"(/ical/)[A-Za-z0-9_%.-]{16,}")

    def filter(self, record):
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - never break logging
            return True
        redacted = self.FEED_PATTERN.sub(r"\1[redacted]", self.PATTERN.sub(r"\1[redacted]", message))
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True
