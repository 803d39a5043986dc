"""baseline: frozen Open-MAGVIT2 tokenizer, a transformer predicts the future latents."""
