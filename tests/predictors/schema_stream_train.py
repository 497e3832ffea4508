"""A streaming runner plus a train() whose choices clash with run()'s (schema tests)."""

from typing import Iterator

from cog import BaseModel, BaseRunner, ConcatenateIterator, Input, Path, streaming


class TrainingResult(BaseModel):
    weights: Path
    loss: float


class Runner(BaseRunner):
    @streaming
    def run(self, mode: str = Input(default="fast", choices=["fast", "slow"]), n: int = 3) -> ConcatenateIterator[str]:
        for i in range(n):
            yield f"{mode}{i} "

    def train(self, mode: str = Input(choices=["full", "lora"]), lr: float = Input(default=0.001, ge=0)) -> TrainingResult:
        return TrainingResult(weights=Path(__file__), loss=0.5)


def train(epochs: int = Input(default=1, ge=1)) -> Iterator[float]:
    for e in range(epochs):
        yield 1.0 / (e + 1)
