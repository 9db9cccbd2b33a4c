"""Recipe bundles: signed wheels of `aifarm.recipes` entry points, trusted per machine, installed in their own
environment and run in a sandbox. No torch here."""
