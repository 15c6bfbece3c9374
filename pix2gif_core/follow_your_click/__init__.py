"""Follow-Your-Click (methods.md §5) with public weights: clicks → a Segment-Anything mask (:mod:`.click_points`,
:mod:`.sam_segmentation`; original SAM checkpoints read by :mod:`.sam_checkpoint`, SAM 2's transforms in
:mod:`.sam2_transforms`; shown over the photo by :mod:`.mask_overlay`), and the confinement of a motion model's movement to that mask
(:mod:`.regional_confinement`).
"""
