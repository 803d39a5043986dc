"""slowfast-frozen: frozen Open-MAGVIT2 tokenizer and frozen SlowFast features condition a
transformer that predicts the future latents."""
