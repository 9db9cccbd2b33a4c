"""Training: the recipe catalog (agent side) and worker processes (the only code that imports torch)."""
