"""ComfyUI adapters of the pack: one module per capability, aggregated here."""
from . import animated_output, gif_sampler, motion_model

_MODULES = (motion_model, gif_sampler, animated_output)

NODE_CLASS_MAPPINGS = {key: cls for module in _MODULES for key, cls in module.NODE_CLASSES.items()}
NODE_DISPLAY_NAME_MAPPINGS = {key: name for module in _MODULES for key, name in module.NODE_DISPLAY_NAMES.items()}
