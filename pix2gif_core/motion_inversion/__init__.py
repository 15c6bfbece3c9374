"""Motion Inversion: motion embeddings in the motion modules' temporal attention, the training losses,
and the DDIM-inverted noise prior.
"""
