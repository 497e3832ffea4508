"""minicog.sdk.exceptions: CancelationException is a BaseException shared by cog, coglet and minicog."""

import pytest

from minicog.sdk.exceptions import CancelationException


def test_a_broad_except_exception_does_not_swallow_a_cancel():
    def model_code():
        try:
            raise CancelationException()
        except Exception:  # what careless model code does
            return "swallowed"

    with pytest.raises(CancelationException):
        model_code()
    assert issubclass(CancelationException, BaseException) and not issubclass(CancelationException, Exception)


def test_one_class_under_every_name():
    import minicog.compat

    minicog.compat.install()
    import cog
    import coglet

    assert cog.CancelationException is coglet.CancelationException is minicog.CancelationException is CancelationException
