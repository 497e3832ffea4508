"""Loader test: defines neither Runner nor Predictor."""


def helper():
    return 1


class Model:
    pass
