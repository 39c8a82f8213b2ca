"""A run directory as a whole: open it, run a search into it, write its outputs (table, ``best/``, report)."""
