"""pytest plugin with Omni's shared fixtures (embedded PostgreSQL, NATS, in-process services)."""
