"""HTTP gateway: FastAPI routes, the Flask legacy app, and the command line."""
