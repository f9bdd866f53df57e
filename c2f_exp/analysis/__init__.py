"""Finished runs read back: headline numbers (`summary`), the compare table and its plots."""
