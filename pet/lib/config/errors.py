class ConfigError(ValueError):
    """A config value or key that is not allowed; the message is one line naming the full key,
    the value and what is allowed. Tools print it and exit with status 2."""
