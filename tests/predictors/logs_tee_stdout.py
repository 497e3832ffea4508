"""Logging idiom: the model replaces sys.stdout with a stream that writes to the
original sys.stdout (or sys.__stdout__) *and* to its own file."""
import io
import sys

from cog import BasePredictor, Input


class Tee:
    def __init__(self, *streams):
        self.streams = streams

    def write(self, s):
        for stream in self.streams:
            stream.write(s)
        return len(s)

    def flush(self):
        for stream in self.streams:
            stream.flush()


class Predictor(BasePredictor):
    def predict(self, original: str = Input(default="stdout", choices=["stdout", "__stdout__", "nested"])) -> str:
        mine = io.StringIO()
        saved = sys.stdout
        if original == "nested":  # two libraries each adding their own tee
            sys.stdout = Tee(sys.stdout, io.StringIO())
            sys.stdout = Tee(sys.stdout, mine)
        else:
            sys.stdout = Tee(getattr(sys, original), mine)
        print("first line")
        print("second", "line")
        sys.stdout.flush()
        sys.stdout = saved
        print("after")
        return mine.getvalue()
