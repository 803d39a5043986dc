"""The quadratic variant: logistic regression over quadratic features."""

from tabular.model import quadratic
from tabular.train import main

if __name__ == "__main__":
    main("quadratic", quadratic)
