"""The error every v_hack module raises for a file that does not fit, or a failed extraction."""


class VHackError(ValueError):
    """A v_hack file that does not fit the model/config, or a failed extraction; says how to fix it."""
