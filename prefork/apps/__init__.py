"""Applications: the handlers that routes point at."""
