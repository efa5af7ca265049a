"""The one exception type the CLI turns into a single line for the user."""


class ColdstartError(Exception):
    """A problem with the user's input (config, data, model folder) or a stage check.

    The message is one line that names the file and the line, field or key where it can, and says what to do.
    """
