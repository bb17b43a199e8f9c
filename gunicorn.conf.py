"""gunicorn reads this from the directory it starts in (or `-c gunicorn.conf.py`): secrets in
request lines (OAuth codes, feed secrets) never reach its access or error log."""

logger_class = "managehub.gunicorn_logging.RedactingLogger"
