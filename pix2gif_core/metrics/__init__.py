"""Metrics: the numbers the papers report – the motion magnitude of a clip (Shi-Tomasi corners + pyramidal
Lucas-Kanade), and Follow-Your-Click's I-MSE (first frame vs input image), temporal consistency and text alignment
(CLIP cosines).
"""
