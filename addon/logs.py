"""The add-on's logging (no bpy): one logger per module, under the add-on's package, whose records
never carry the backend's token. Blender's console shows warnings and errors; a handler the user
adds (or `logging.basicConfig(level=logging.INFO)` in Blender's Python console) shows the rest.

The token guards every request to the backend; it is masked wherever it appears in a record (the
message, its arguments, a traceback): the token in use (`add_secret`) and anything written as a
token field (`token=...`, `"token": "..."`)."""

from __future__ import annotations

import logging
import re

MASK = "***"
_secrets: set[str] = set()
_TOKEN_FIELD = re.compile(r"""(token['"]?\s*[:=]\s*['"]?)([A-Za-z0-9_\-.~+/=]{6,})""", re.IGNORECASE)


def add_secret(value: str | None) -> None:
    """A value never to show in a log record (the token read from the backend's token file)."""
    if value and len(value) >= 6:
        _secrets.add(value)


def mask(text: str) -> str:
    for secret in _secrets:
        text = text.replace(secret, MASK)
    return _TOKEN_FIELD.sub(lambda m: m.group(1) + MASK, text)


class MaskSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        masked = mask(text)
        if masked != text:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = mask(logging.Formatter().formatException(record.exc_info))
        return True


_FILTER = MaskSecrets()


def get_logger(name: str) -> logging.Logger:
    """The module's logger, masking the token (a filter on the logger itself: it sees every record
    the module logs, whatever handlers the user attached)."""
    logger = logging.getLogger(name)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    return logger
