"""Internal modules: no compatibility promise. The public API is ``eventward`` itself."""
