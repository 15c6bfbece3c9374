"""The widget values a node saves, named from the server's own node definitions (``/object_info``), as the front
end builds its widgets: the reference the browser tests compare the page against."""
from __future__ import annotations

WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
SEED_NAMES = ("seed", "noise_seed")


def widget_names(definition: dict) -> list[str | None]:
    """The names of a node's saved widget values in order, from the server's definition (None: the 'control after
    generate' value the front end saves after a seed)."""
    inputs = definition["input"]
    order = definition.get("input_order") or {section: list(specs) for section, specs in inputs.items()}
    names: list[str | None] = []
    for section in ("required", "optional"):
        for name in order.get(section, []):
            kind, options = inputs[section][name][0], (inputs[section][name] + [{}])[1]
            if not (isinstance(kind, list) or kind in WIDGET_TYPES) or options.get("forceInput"):
                continue
            names.append(name)
            if options.get("image_upload"):  # the front end's upload button, saved after the file name
                names.append("upload")
            if kind == "INT" and (name in SEED_NAMES or options.get("control_after_generate")):
                names.append(None)
    return names
