"""Sharded data, streaming and the Dask cluster."""
