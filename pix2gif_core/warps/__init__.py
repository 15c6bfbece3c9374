"""Warps: the parametric, weight-free motion field (translate / zoom / rotate / sway, limited to a mask) and
warping frames by it.
"""
