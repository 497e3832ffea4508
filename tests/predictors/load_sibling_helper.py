"""Helper imported by load_sibling.py."""
VALUE = "from sibling"
