"""The error every config check raises, and the one line an exception becomes."""
import re


class ConfigError(ValueError):
    """A config value or key that is not allowed; the message is one line naming the full key,
    the value and what is allowed. Tools print it and exit with status 2."""


def first_line(error: BaseException, limit: int = 160) -> str:
    """The first line of ``error``'s message (its type's name when it has none), cut to
    ``limit`` characters; torch's ``[enforce fail at FILE:LINE] .`` prefix is dropped. The one
    way every tool shows an exception it turns into a one-line error."""
    text = re.sub(r"^\[enforce fail at [^\]]*\]\s*\.?\s*", "", str(error).strip())
    line = text.splitlines()[0] if text else type(error).__name__
    return line if len(line) <= limit else line[:limit - 3] + "..."
