"""SavedModel export with fixed serving signatures (`serving`); ``python -m tfdet.export``."""
