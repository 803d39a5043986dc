"""A small tabular study: logistic regression on points labelled by a noisy circle."""
