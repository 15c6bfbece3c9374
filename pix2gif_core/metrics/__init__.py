"""Metrics: the numbers the papers report, starting with the motion magnitude of a clip (Shi-Tomasi corners +
pyramidal Lucas-Kanade).
"""
