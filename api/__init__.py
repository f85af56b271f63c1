"""The HTTP API: FastAPI routes over the experiments service. It never trains anything."""
