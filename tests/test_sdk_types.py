"""Path, URLPath, File, URLFile, Secret, iterators, Opaque, BaseModel."""

import dataclasses
import io
import pathlib
import pickle
import typing

import pytest

from minicog.sdk import (
    AsyncConcatenateIterator, BaseModel, ConcatenateIterator, File, Opaque, Path, Secret, URLFile, URLPath,
)
from minicog.sdk.types import get_filename
from support import Receiver


# ------------------------------------------------------------------ Secret

def test_secret_masks_value():
    s = Secret("hunter2")
    assert str(s) == "**********"
    assert repr(s) == "Secret(**********)"
    assert s.get_secret_value() == "hunter2"
    assert f"{s}" == "**********"


def test_secret_none():
    s = Secret()
    assert s.secret_value is None
    assert str(s) == ""
    assert repr(s) == "Secret()"
    assert s.get_secret_value() is None


def test_secret_is_frozen_dataclass():
    s = Secret("a")
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.secret_value = "b"  # type: ignore[misc]
    assert dataclasses.asdict(s) == {"secret_value": "a"}
    assert Secret("a") == Secret("a")


# -------------------------------------------------------------------- Path

def test_path_is_posixpath_and_validate_keeps_local_paths(tmp_path):
    p = Path.validate(str(tmp_path / "x.txt"))
    assert type(p) is Path
    assert isinstance(p, pathlib.PosixPath)
    assert str(p) == str(tmp_path / "x.txt")
    existing = pathlib.Path("/etc")
    assert Path.validate(existing) is existing


def test_path_validate_data_url_gives_urlpath_that_converts_and_unlinks():
    p = Path.validate("data:text/plain;base64,aGVsbG8=")
    assert isinstance(p, URLPath) and isinstance(p, pathlib.Path)
    assert str(p) == "data:text/plain;base64,aGVsbG8="
    assert p.filename == "file.txt"
    local = p.convert()
    try:
        assert type(local) is Path
        assert local.read_bytes() == b"hello"
        assert local.name.endswith("file.txt")
        assert p.convert() is local  # downloaded once
    finally:
        p.unlink()
    assert not local.exists()
    p.unlink(missing_ok=True)


def test_urlpath_before_convert_unlink_is_noop():
    p = Path.validate("data:,abc")
    p.unlink()  # nothing downloaded yet: nothing to remove


def test_path_validate_http_is_lazy_and_sends_user_agent(monkeypatch):
    monkeypatch.setenv("COG_USER_AGENT", "minicog-test/1")
    with Receiver(lambda r: (200, {"Content-Type": "image/png"}, b"PNGDATA")) as rx:
        p = Path.validate(rx.url + "/dir/my%20pic.png?sig=1")
        assert isinstance(p, URLPath)
        assert p.filename == "my pic.png"
        assert str(p) == rx.url + "/dir/my%20pic.png?sig=1"
        assert rx.requests == []  # nothing fetched yet
        local = p.convert()
        try:
            assert local.read_bytes() == b"PNGDATA"
            assert local.name.endswith("my pic.png")
        finally:
            p.unlink()
        assert rx.requests[0].method == "GET"
        assert rx.requests[0].path == "/dir/my%20pic.png?sig=1"
        assert rx.requests[0].headers["user-agent"] == "minicog-test/1"


def test_get_filename_rules():
    assert get_filename("data:image/png;base64,AAAA") == "file.png"
    assert get_filename("data:application/x-unknown-thing;base64,AAAA") == "file"
    assert get_filename("https://x.test/a/b/c%2Fd+e.txt") == "c_d e.txt"
    long = "n" * 300 + ".png"
    name = get_filename("https://x.test/" + long)
    assert name.endswith("~.png") and len(name.encode()) == 200


# -------------------------------------------------------------- File, URLFile

def test_file_validate_data_url_gives_bytesio():
    f = File.validate("data:text/plain;base64,aGVsbG8=")
    assert isinstance(f, io.BytesIO)
    assert f.read() == b"hello"


def test_file_validate_passes_file_objects_through():
    buf = io.BytesIO(b"x")
    assert File.validate(buf) is buf


def test_file_validate_rejects_other_schemes_with_cogs_message():
    with pytest.raises(ValueError) as exc:
        File.validate("ftp://example.com/x")
    assert str(exc.value) == "'ftp' is not a valid URL scheme. 'data', 'http', or 'https' is supported."


def test_urlfile_requires_http_with_cogs_message():
    with pytest.raises(ValueError) as exc:
        URLFile("file:///etc/passwd")
    assert str(exc.value) == "URLFile requires URL to conform to HTTP or HTTPS protocol"


def test_urlfile_is_lazy_reads_and_pickles():
    with Receiver(lambda r: (200, {}, b"line1\nline2\n")) as rx:
        f = File.validate(rx.url + "/f/data.bin")
        assert isinstance(f, URLFile) and isinstance(f, io.IOBase)
        assert f.name == "data.bin"
        assert rx.requests == []
        clone = pickle.loads(pickle.dumps(f))
        assert isinstance(clone, URLFile) and clone.name == "data.bin"
        assert f.read() == b"line1\nline2\n"
        assert len(rx.requests) == 1
        assert list(clone) == [b"line1\n", b"line2\n"]
        assert len(rx.requests) == 2
        f.close()
        clone.close()
        assert f.closed


def test_urlfile_http_error_raises_on_first_use():
    import urllib.error
    with Receiver(lambda r: (404, {}, b"nope")) as rx:
        f = URLFile(rx.url + "/missing.txt")
        with pytest.raises(urllib.error.HTTPError):
            f.read()


# --------------------------------------------------------------- iterators

def test_concatenate_iterators_are_generic_markers():
    alias = ConcatenateIterator[str]
    assert typing.get_origin(alias) is ConcatenateIterator
    assert typing.get_args(alias) == (str,)
    assert typing.get_origin(AsyncConcatenateIterator[str]) is AsyncConcatenateIterator
    import collections.abc
    assert issubclass(ConcatenateIterator, collections.abc.Iterator)
    assert issubclass(AsyncConcatenateIterator, collections.abc.AsyncIterator)


def test_opaque_marker_in_annotated():
    hint = typing.Annotated[dict, Opaque]
    assert hint.__metadata__ == (Opaque,)
    assert repr(Opaque) == "cog.Opaque"
    assert pickle.loads(pickle.dumps(Opaque)) is Opaque


# ---------------------------------------------------------------- BaseModel

def test_basemodel_subclasses_become_dataclasses():
    class Output(BaseModel):
        text: str
        score: float = 0.5

    assert dataclasses.is_dataclass(Output)
    out = Output(text="hi")
    assert dataclasses.asdict(out) == {"text": "hi", "score": 0.5}


def test_basemodel_inheritance_and_dataclass_kwargs():
    class Base(BaseModel):
        a: int

    class Child(Base, order=True):
        b: int = 2

    c = Child(a=1)
    assert dataclasses.asdict(c) == {"a": 1, "b": 2}
    assert Child(a=1) < Child(a=2)  # order=True reached dataclass()
    with pytest.raises(TypeError):
        Base(a=1) < Base(a=2)  # noqa: B015


def test_basemodel_init_false():
    class NoInit(BaseModel, init=False):
        a: int = 1

    assert "__init__" not in NoInit.__dict__


def test_basemodel_primary_base_must_be_basemodel():
    class Mixin:
        pass

    with pytest.raises(TypeError) as exc:
        class Bad(Mixin, BaseModel):  # noqa: F841
            x: int
    assert str(exc.value) == 'Primary base class of "Bad" must inherit from BaseModel'


def test_basemodel_rejects_dataclass_mixins():
    @dataclasses.dataclass
    class DC:
        y: int = 0

    with pytest.raises(TypeError) as exc:
        class Bad(BaseModel, DC):  # noqa: F841
            x: int = 1
    assert str(exc.value) == 'Cannot mixin dataclass "DC" while inheriting from `BaseModel`'


def test_basemodel_manual_dataclass_rules():
    class Manual(BaseModel, auto_dataclass=False):
        pass

    assert not dataclasses.is_dataclass(Manual)

    class Auto(BaseModel):
        a: int = 0

    with pytest.raises(ValueError) as exc:
        class Broken(Auto, auto_dataclass=False):  # noqa: F841
            pass
    assert str(exc.value) == (
        'Primary base class of "Broken" ("Auto") has auto_dataclass=True, '
        'but "Broken" has auto_dataclass=False. This creates broken field inheritance.'
    )
