"""The HTTP side of `dispatcher serve`: health, readiness and metrics for operators
(provider webhooks and the people's pages join here)."""
