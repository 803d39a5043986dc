"""Model, data and training modules that every variant imports. Never imports a variant."""
