"""Services: the use cases (import, plan, send, history, export) over the ports."""
