"""The local dashboard and its JSON API (aiohttp + jinja2)."""
