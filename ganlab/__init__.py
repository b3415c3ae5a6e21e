"""ganlab: an ablation harness for the GAN training tricks of Goodfellow's 2016 tutorial."""

__version__ = "0.1.0"
