"""Loader test: function predictors of every kind."""
from cog import ConcatenateIterator, concurrent, streaming


def predict(x: int) -> int:
    return x * 2


async def train(steps: int = 1) -> str:
    return f"trained {steps}"


def gen(n: int) -> ConcatenateIterator[str]:
    for i in range(n):
        yield str(i)


@streaming
@concurrent(max=4)
async def agen(n: int):
    for i in range(n):
        yield i


NOT_CALLABLE = 42
