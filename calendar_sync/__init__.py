"""Keep members' calendars in step with a Django model. See README.md."""

__version__ = "0.1.0"
