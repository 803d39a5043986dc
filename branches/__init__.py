"""One package per experiment variant. Variants import ``shared`` and never each other."""
