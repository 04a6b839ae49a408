"""Example services built on otel-dist: auth, orders and gateway (see README, "Example services")."""
