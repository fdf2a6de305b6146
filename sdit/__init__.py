"""sdit: the Spiking Diffusion Transformer, its DiT baseline, and DDPM/DDIM diffusion."""

__version__ = "0.1.0"
