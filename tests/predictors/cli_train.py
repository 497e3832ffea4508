"""CLI tests: a trainer whose output nests its weights file (sent as a data: URI)."""

import tempfile

from cog import BaseModel, BaseRunner, Input, Path


class TrainingOutput(BaseModel):
    weights: Path
    steps: int


class Trainer(BaseRunner):
    def train(self, steps: int = Input(default=2, ge=1, le=100)) -> TrainingOutput:
        print(f"cli_train: training for {steps} steps")
        f = tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False)
        with f:
            f.write(f"weights after {steps} steps")
        return TrainingOutput(weights=Path(f.name), steps=steps)


class Broken(BaseRunner):
    """A training that logs and then fails (exit status 1)."""

    def train(self, steps: int = Input(default=2)) -> TrainingOutput:
        print("cli_train: broken training starts")
        raise RuntimeError(f"training diverged after {steps} steps")
