"""ComfyUI adapters of the pack: one module per capability, named like the engine subpackage it adapts."""
from . import animatediff, animatediff_sampler, animatezero, follow_your_click, follow_your_click_model, i2vgen_xl
from . import i2vgen_xl_refine, metrics
from . import motion_inversion, motion_inversion_training
from . import pix2gif_model, pix2gif_sampler, video, warps
from .conventions import checking_inputs

_MODULES = (animatediff, animatediff_sampler, video,
            pix2gif_model, pix2gif_sampler, warps, metrics, animatezero,
            motion_inversion, motion_inversion_training, i2vgen_xl, i2vgen_xl_refine, follow_your_click,
            follow_your_click_model)

NODE_CLASS_MAPPINGS = {key: checking_inputs(cls) for module in _MODULES
                       for key, cls in module.NODE_CLASSES.items()}
NODE_DISPLAY_NAME_MAPPINGS = {key: name for module in _MODULES for key, name in module.NODE_DISPLAY_NAMES.items()}
