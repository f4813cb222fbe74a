"""The PostgreSQL backend of the store (``store.url = "postgresql://…"``): see :mod:`digest.state.postgres.store`."""
