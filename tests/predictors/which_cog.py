"""Worker tests: report which ``cog`` the model got (minicog's alias or a real package)."""
import cog
import minicog


class Predictor(cog.BasePredictor):
    def predict(self) -> dict:
        return {"alias": cog.Path is minicog.Path, "fake": getattr(cog, "FAKE_COG", False)}
