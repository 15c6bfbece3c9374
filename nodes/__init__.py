"""ComfyUI adapters of the pack: one module per capability, aggregated here."""
from . import animated_output, animatezero, gif_sampler, motion_model
from . import motion_magnitude, motion_preview, pix2gif_model, pix2gif_sampler
from . import motion_embedding_nodes, motion_inversion_training

_MODULES = (motion_model, gif_sampler, animated_output,
            pix2gif_model, pix2gif_sampler, motion_preview, motion_magnitude, animatezero,
            motion_embedding_nodes, motion_inversion_training)

NODE_CLASS_MAPPINGS = {key: cls for module in _MODULES for key, cls in module.NODE_CLASSES.items()}
NODE_DISPLAY_NAME_MAPPINGS = {key: name for module in _MODULES for key, name in module.NODE_DISPLAY_NAMES.items()}
