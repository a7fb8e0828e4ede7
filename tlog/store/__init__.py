"""Storage: the `LogReader` seam, the PostgreSQL store (the only SQL), migrations, caches."""
