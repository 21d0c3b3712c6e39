"""``fleetward probe``: proves the authorization matrix and the abuse cases against a running
deployment over HTTP, from a declarative spec that is independent of the implementation."""
