"""AI Farm: donate GPU time to a LAN training farm."""

__version__ = "0.1.0"
