"""Fast unit tests: no database, no network beyond 127.0.0.1."""
