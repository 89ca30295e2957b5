"""Connectors: HTTP systems, SQL data and AI models, under permissions, limits and budgets.

``base`` loads ``config/connectors.yaml`` and holds the per-process registry;
``http``, ``sql`` and ``llm`` are the kinds; ``limits`` and ``budget`` are the
shared Redis guards; ``agent`` runs a model's tool calls through the others.
"""
