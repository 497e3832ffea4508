"""Tests for minicog.encoding: Cog's output conversions, file outputs and JSON errors."""

from __future__ import annotations

import base64
import dataclasses
import datetime
import enum
import io
import json
import os
import pathlib

import pytest

from minicog import encoding
from minicog.encoding import OutputEncoder, dumps, encode_files, encode_value, is_file_like, iter_output_items, make_encodeable, write_iobase
from minicog.errors import OutputError
from minicog.sdk import BaseModel, Path, Secret


class Color(enum.Enum):
    RED = "red"
    NUM = 3


def b64(uri: str) -> bytes:
    return base64.b64decode(uri.split(",", 1)[1])


def test_cogs_verified_example(tmp_path):
    p = tmp_path / "x.json"
    p.write_text("{}")
    value = {"p": Path(p), "dt": datetime.datetime(2020, 1, 2, 3, 4, 5), "e": Color.RED, "s": {1}, "t": (1, 2)}
    assert json.loads(dumps(encode_value(value))) == {
        "dt": "2020-01-02T03:04:05", "e": "red", "p": "data:application/json;base64,e30=", "s": [1], "t": [1, 2]}


def test_base_model_with_nested_file(tmp_path):
    class Out(BaseModel):
        a: int
        f: Path

    p = tmp_path / "note.txt"
    p.write_text("hello")
    assert encode_value(Out(a=1, f=Path(p))) == {"a": 1, "f": "data:text/plain;base64," + base64.b64encode(b"hello").decode()}


def test_nested_iobase_inlined_text_as_utf8():
    assert encode_value([io.BytesIO(b"rawbytes")]) == ["data:application/octet-stream;base64,cmF3Ynl0ZXM="]
    [uri] = encode_value([io.StringIO("zaż")])
    assert b64(uri) == "zaż".encode("utf-8")
    stream = io.BytesIO(b"abc")
    stream.read()  # consumed: rewound before encoding
    assert b64(encode_files({"k": stream})["k"]) == b"abc"


def test_make_encodeable_duck_types():
    class V2:
        def model_dump(self):
            return {"when": datetime.date(2021, 5, 6)}

    class V1:
        def dict(self):
            return {"t": (1, Color.NUM)}

    @dataclasses.dataclass
    class DC:
        x: int
        stream: io.BytesIO  # asdict() would try to deep-copy this

    class FakeArray:  # numpy-like without numpy
        def tolist(self):
            return [[1.5, 2.0], [3.0, 4.0]]

    class FakeScalar:
        dtype = "int64"

        def item(self):
            return 7

    def gen():
        yield 1
        yield {2}

    assert make_encodeable(V2()) == {"when": "2021-05-06"}
    assert make_encodeable(V1()) == {"t": [1, 3]}
    dc = make_encodeable(DC(1, io.BytesIO(b"z")))
    assert dc["x"] == 1 and isinstance(dc["stream"], io.BytesIO)
    assert make_encodeable(FakeArray()) == [[1.5, 2.0], [3.0, 4.0]]
    assert make_encodeable(FakeScalar()) == 7
    assert make_encodeable(gen()) == [1, [2]]
    assert make_encodeable(frozenset({"a"})) == ["a"]
    # date and time are ISO strings too (Cog only converts datetime)
    assert make_encodeable(datetime.time(1, 2, 3)) == "01:02:03"
    assert make_encodeable({"k": datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)}) == {"k": "2020-01-01T00:00:00+00:00"}
    # PathLike → pathlib.Path; scalars unchanged
    class PL(os.PathLike):
        def __fspath__(self):
            return "/tmp/x.png"

    assert make_encodeable(PL()) == pathlib.Path("/tmp/x.png")
    assert make_encodeable("s") == "s" and make_encodeable(None) is None and make_encodeable(True) is True


def test_secret_output_is_a_dataclass_as_in_cog():
    assert make_encodeable(Secret("hunter2")) == {"secret_value": "hunter2"}


def test_dumps_is_compact_utf8():
    assert dumps({"a": [1, 2], "b": "ż"}) == '{"a":[1,2],"b":"ż"}'


def test_dumps_names_unsupported_type():
    with pytest.raises(OutputError) as info:
        dumps({"x": object()})
    assert str(info.value) == "Failed to serialize output: TypeError: Object of type object is not JSON serializable"
    with pytest.raises(OutputError, match="Object of type bytes is not JSON serializable"):
        encode_value(b"raw")


@pytest.mark.parametrize("bad,shown", [(float("nan"), "nan"), (float("inf"), "inf"), (float("-inf"), "-inf")])
def test_dumps_rejects_nan_and_infinity_naming_value_and_place(bad, shown):
    with pytest.raises(OutputError) as info:
        dumps({"a": [0, bad]})
    assert f"{shown} at output[\"a\"][1]" in str(info.value)
    assert str(info.value).startswith("Failed to serialize output:")


def test_dumps_rejects_circular_and_surrogates():
    loop: list = []
    loop.append(loop)
    with pytest.raises(OutputError, match="Circular reference"):
        dumps(loop)
    with pytest.raises(OutputError, match="nested too deeply"):
        encode_value(loop)
    with pytest.raises(OutputError, match="surrogate"):
        dumps("\ud800")


def test_is_file_like():
    assert is_file_like(Path("/x")) and is_file_like(pathlib.Path("/x")) and is_file_like(io.BytesIO())
    assert not is_file_like("/x") and not is_file_like(b"x") and not is_file_like(None)


def test_write_iobase_naming(tmp_path):
    d = str(tmp_path)
    assert write_iobase(io.BytesIO(b"rawbytes"), d, 0) == os.path.join(d, "0.bin")
    assert (tmp_path / "0.bin").read_bytes() == b"rawbytes"
    src = tmp_path / "picture.png"
    src.write_bytes(b"\x89PNG" * 1000)
    with open(src, "rb") as f:
        f.read(3)  # partly consumed: rewound
        assert write_iobase(f, d, 1) == os.path.join(d, "1.png")
    assert (tmp_path / "1.png").read_bytes() == b"\x89PNG" * 1000
    named = io.BytesIO(b"n")
    named.name = "noext"
    assert write_iobase(named, d, 2).endswith("2.bin")


def test_write_iobase_text_stream_fails_like_cog(tmp_path):
    with pytest.raises(OutputError, match=r"^Failed to read IOBase: StringIO is a text stream"):
        write_iobase(io.StringIO("text"), str(tmp_path), 0)
    assert os.listdir(tmp_path) == []


def test_iter_output_items():
    def gen():
        yield 1

    g = gen()
    assert iter_output_items(g) == (True, g)
    assert iter_output_items([1, 2]) == (True, [1, 2])
    assert iter_output_items((1,)) == (True, (1,))
    assert iter_output_items({"a": 1}) == (False, ({"a": 1},))
    assert iter_output_items("text") == (False, ("text",))
    stream = io.BytesIO(b"x")  # an iterator, but a single file output
    assert iter_output_items(stream) == (False, (stream,))


def test_output_encoder_numbers_iobase_files(tmp_path):
    enc = OutputEncoder(str(tmp_path))
    p = tmp_path / "given.txt"
    p.write_text("keep")
    assert enc.encode(Path(p)) == encoding.EncodedItem("file", path=str(p), mime="text/plain")
    first = enc.encode(io.BytesIO(b"a"))
    second = enc.encode(io.BytesIO(b"b"))
    assert (first.path, second.path) == (os.path.join(str(tmp_path), "0.bin"), os.path.join(str(tmp_path), "1.bin"))
    assert first.mime == "application/octet-stream"
    assert enc.encode({"n": Color.NUM}) == encoding.EncodedItem("value", value={"n": 3})


def test_missing_nested_file_is_an_output_error(tmp_path):
    with pytest.raises(OutputError, match="Failed to read output file"):
        encode_value({"f": Path(tmp_path / "gone.png")})
