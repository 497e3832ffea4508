"""Loader test: ``Runner`` may be a plain function (Cog accepts any callable)."""


def Runner(x: int) -> int:  # noqa: N802
    return x
