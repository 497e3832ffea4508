"""Worker tests: a plain predictor that echoes, prints, records metrics and can fail."""
import os
import sys
import subprocess
import threading

from cog import BasePredictor, Input, Secret, current_scope


class Predictor(BasePredictor):
    def setup(self):
        print("setting up")
        self.calls = 0

    def predict(self, text: str = Input(default="hi"), fail: bool = False, partial: bool = False,
                c_level: bool = False, child: bool = False, metric: int = 0, thread: bool = False,
                token: Secret = None) -> str:
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
        if thread:
            t = threading.Thread(target=lambda: print("from a thread"))
            t.start()
            t.join()
        if token is not None:
            print(f"token {token} {type(token).__name__} {len(token.get_secret_value())}")
        if partial:
            sys.stdout.write("no newline at end")
        if fail:
            raise ValueError("boom")
        return text.upper()
