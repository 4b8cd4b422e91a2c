"""Envoy ext_authz decision service: identity, route policy, RFC 6750 answers."""
