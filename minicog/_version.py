"""Version numbers: minicog's own, and the Cog release whose API it speaks."""

__version__ = "0.1.0"
#: The Cog / coglet release whose HTTP API, SDK and error strings minicog follows.
COG_VERSION = "0.23.1"
