"""Data: reading, fetching and generating datasets, item texts."""
