"""AnimateZero: first-frame pinning to the image's own trajectory, spatial K/V sharing with frame 1, and
positional-corrected window attention in the motion modules.
"""
