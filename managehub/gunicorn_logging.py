"""gunicorn's logger with Django's redaction: its access log (`--access-logfile`) and error log hide
OAuth codes and feed secrets like ManageHub's own log handlers do. `gunicorn.conf.py` selects it."""

from gunicorn.glogging import Logger

from .log_filters import RedactOAuthQuery


class RedactingLogger(Logger):
    def setup(self, cfg):
        super().setup(cfg)
        for log in (self.access_log, self.error_log):
            log.addFilter(RedactOAuthQuery())
