"""One module per dashboard tab; each has ``render(store)``."""
