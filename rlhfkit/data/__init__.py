"""Data: reading, validating and collating training files."""
