"""The contract between Envoy and authz-service, in names: what each side sets and reads.

Written once, in protos/tollgate/v1/ (contract.proto, denial.schema.json); these
constants are the code's copy, and tests/authz/test_envoy_contract.py holds the code
and every shipped Envoy config to that file.
"""

from __future__ import annotations

# Per-route settings from Envoy's ext_authz `check_settings.context_extensions` (gRPC)
# or, on the HTTP door, from the attribute headers below.
ROUTE_EXTENSION = "tollgate_route"  # selects a route policy by name
SCOPES_EXTENSION = "tollgate_scopes"  # scopes this Envoy route needs on top

# The HTTP door's attribute headers: set by Envoy (`authorization_request.headers_to_add`
# with formatter values), never copied from the client (they are not in `allowed_headers`,
# and headers_to_add overwrites a header of the same name).
ATTRIBUTE_PREFIX = "x-tollgate-attr-"
# RequestContext field -> (header, the Envoy formatter value the shipped configs set).
ATTRIBUTES = {
    "source_address": ("source-address", "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"),
    "peer_principal": ("peer-principal", "%DOWNSTREAM_PEER_URI_SAN%"),
    "peer_certificate_sha256": ("peer-cert-sha256", "%DOWNSTREAM_PEER_FINGERPRINT_256%"),
    "scheme": ("scheme", "%REQ(:SCHEME)%"),
    "route": ("route", "%METADATA(ROUTE:tollgate:route)%"),
    "scopes": ("scopes", "%METADATA(ROUTE:tollgate:scopes)%"),
}
ATTRIBUTE_HEADERS = {name: ATTRIBUTE_PREFIX + header for name, (header, _) in ATTRIBUTES.items()}

# Dynamic metadata authz returns on an allow (gRPC: CheckResponse.dynamic_metadata;
# HTTP: response headers of these exact names, turned into metadata by Envoy's
# `dynamic_metadata_from_headers`), filed under `envoy.filters.http.ext_authz`.
METADATA_KEYS = ("subject", "identity", "issuer", "tenant", "plan", "scopes", "route")

# The HTTP door: headers of the client's request Envoy must remove before the upstream.
HEADERS_TO_REMOVE = "x-envoy-auth-headers-to-remove"
