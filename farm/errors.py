"""One error type for every input the farm refuses.

The CLI turns a `FarmError` into a one-line message and exit status 2, so each
raise site must name the file, key or field that is wrong: the message is all
the user sees.
"""


class FarmError(Exception):
    """Bad input or an unsatisfiable request, explained for the user."""
