"""Reports the SIGTERM disposition a child process of the model inherits."""
import subprocess
import sys

from cog import BaseRunner


class Runner(BaseRunner):
    def run(self) -> str:
        code = "import signal; print(signal.getsignal(signal.SIGTERM) == signal.SIG_DFL)"
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30).stdout.strip()
