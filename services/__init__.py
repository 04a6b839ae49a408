"""Example services built on otel-dist: auth, orders and gateway (see docs/how-to/example-services.md)."""
