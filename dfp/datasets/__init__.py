"""Uploaded datasets: safe parsing, the blob store, and the service behind /v1/datasets."""
