"""Settings, the SQL schema, the event catalogue, the outbox, tasks and the artifact store."""
