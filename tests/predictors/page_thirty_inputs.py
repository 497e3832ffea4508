"""A model with thirty inputs of mixed kinds: the page must render them all, in order."""

from cog import BaseRunner, Input


class Runner(BaseRunner):
    def run(
        self,
        field_00: str = Input(description="Text 0"),
        field_01: int = Input(default=1, ge=0, le=1000),
        field_02: float = Input(default=0.5),
        field_03: bool = Input(default=False),
        field_04: str = Input(default="a", choices=["a", "b", "c"]),
        field_05: str = Input(description="Text 5"),
        field_06: int = Input(default=6, ge=0, le=1000),
        field_07: float = Input(default=0.5),
        field_08: bool = Input(default=False),
        field_09: str = Input(default="a", choices=["a", "b", "c"]),
        field_10: str = Input(description="Text 10"),
        field_11: int = Input(default=11, ge=0, le=1000),
        field_12: float = Input(default=0.5),
        field_13: bool = Input(default=False),
        field_14: str = Input(default="a", choices=["a", "b", "c"]),
        field_15: str = Input(description="Text 15"),
        field_16: int = Input(default=16, ge=0, le=1000),
        field_17: float = Input(default=0.5),
        field_18: bool = Input(default=False),
        field_19: str = Input(default="a", choices=["a", "b", "c"]),
        field_20: str = Input(description="Text 20"),
        field_21: int = Input(default=21, ge=0, le=1000),
        field_22: float = Input(default=0.5),
        field_23: bool = Input(default=False),
        field_24: str = Input(default="a", choices=["a", "b", "c"]),
        field_25: str = Input(description="Text 25"),
        field_26: int = Input(default=26, ge=0, le=1000),
        field_27: float = Input(default=0.5),
        field_28: bool = Input(default=False),
        field_29: str = Input(default="a", choices=["a", "b", "c"]),
    ) -> str:
        return "ok"
