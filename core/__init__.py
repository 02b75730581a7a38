"""Shared logic of the playground: neither backend nor UI (both import it)."""
