"""cnnkit's own error type: every bad input a user can cause raises it, with a one-line message."""


class CnnkitError(ValueError):
    """A bad argument, shape, file or name; the message says what arrived and what was expected."""
