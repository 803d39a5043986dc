"""joint-i3d: a trainable Open-MAGVIT2 tokenizer trained with the latent predictor, which is
conditioned on I3D motion features of the context frames."""
