"""Parquet snapshots and the pandas analytics over them."""
