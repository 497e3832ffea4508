"""Engine tests: reports the spin window the worker's sync loop uses (Settings.spin_wait
as the parent sent it), read from the real loop's frame on the stack of predict()."""
import sys

from cog import BasePredictor


class Predictor(BasePredictor):
    def predict(self) -> dict:
        frame = sys._getframe(1)
        while frame is not None and frame.f_code.co_name != "_main_loop_direct":
            frame = frame.f_back
        if frame is None:
            raise RuntimeError("predict() was not called from the worker's sync loop")
        worker = frame.f_locals["self"]
        return {"loop_spin": frame.f_locals["spin"], "settings_spin": worker.settings.spin_wait}
