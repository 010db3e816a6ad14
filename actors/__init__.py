"""Dramatiq actors, the outbox relay and the RL engine they run."""
