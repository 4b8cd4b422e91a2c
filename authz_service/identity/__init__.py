"""Who is calling: one module per identity mechanism, the registry of them
(identity/registry.py), credential extraction, the verified-token cache.
"""
