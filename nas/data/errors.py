"""``DataError``: bad data input, one line naming the file or folder (the CLIs exit 2 with it)."""


class DataError(ValueError):
    """Bad data input; the message is one line and names the file or folder."""
