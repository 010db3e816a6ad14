"""The RL engine: numpy policies, agents, safe model loading and evaluation.

A pure library: nothing here touches the bus, the database or HTTP.
"""
