"""Key material for JWT sources: key sets, and where they come from (files, JWKS
URLs, OIDC discovery), refreshed in the background.
"""
