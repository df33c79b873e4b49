"""Data quality: the per-column profile of a batch and its markdown report."""
