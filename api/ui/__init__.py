"""The web UI at /ui: server-rendered pages on the API's own service layer and routes."""
