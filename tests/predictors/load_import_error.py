"""Loader test: importing this file fails."""
import minicog_no_such_package_xyz  # noqa: F401
