"""Worker tests: a plain predictor that echoes, prints, records metrics and can fail."""
import os
import sys
import subprocess

from cog import BasePredictor, Input, current_scope


class Predictor(BasePredictor):
    def setup(self):
        print("setting up")
        self.calls = 0

    def predict(self, text: str = Input(default="hi"), fail: bool = False, partial: bool = False,
                c_level: bool = False, child: bool = False, metric: int = 0) -> str:
        self.calls += 1
        print(f"got {text}")
        print("to stderr", file=sys.stderr)
        if c_level:
            os.write(1, b"from C\n")
            os.write(2, b"from C stderr\n")
        if child:
            subprocess.run(["echo", "from child"], check=True)
        if metric:
            current_scope().record_metric("tokens", metric)
            current_scope().record_metric("tokens", 1, "increment")
        if partial:
            sys.stdout.write("no newline at end")
        if fail:
            raise ValueError("boom")
        return text.upper()
