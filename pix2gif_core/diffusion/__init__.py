"""Diffusion machinery shared by the methods: noise schedules, DDIM inversion, and the LDM checkpoint
layout (UNet / CLIP / VAE shapes read from weights).
"""
