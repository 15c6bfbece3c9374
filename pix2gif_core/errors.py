"""The one exception type the engine raises for bad user input.

Core functions raise :class:`Pix2GifInputError` with a message that names the offending input and the fix;
the node layer prefixes the node's display name, so a ComfyUI user sees one actionable sentence instead of a
traceback from deep inside torch.
"""


class Pix2GifInputError(ValueError):
    """Bad input (file, tensor shape, option). ``str(err)`` is the whole user-facing message."""
