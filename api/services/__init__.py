"""The service layer shared by the FastAPI routes and the Flask legacy app.

Each function takes a session, does one use case (validate, change state, record the event) and
commits explicitly. Routes only translate HTTP to these calls.
"""
