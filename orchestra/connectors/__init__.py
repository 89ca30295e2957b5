"""Connectors: HTTP systems, SQL data and AI models, under permissions, limits and budgets.

``registry`` loads ``config/connectors.yaml`` and builds each connector once per
process; ``base`` is what the kinds share; ``http``, ``sql`` and ``llm`` are the kinds; ``limits`` and ``budget`` are the
shared Redis guards; ``agent`` runs a model's tool calls through the others.
"""
