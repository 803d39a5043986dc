"""The linear variant: logistic regression over linear features."""

from tabular.model import linear
from tabular.train import main

if __name__ == "__main__":
    main("linear", linear)
