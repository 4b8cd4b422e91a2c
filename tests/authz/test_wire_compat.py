"""Independent wire check: envoy-data-plane's classes (betterproto2, generated on their
own from the Envoy protos) and our upb classes agree on CheckRequest/CheckResponse.

envoy-data-plane is far too slow for the hot path (see ARCHITECTURE.md) but, as
a second implementation, it catches a field-number or type mistake on our side.
"""

from __future__ import annotations

import json
import warnings

import pydantic
import pytest
from envoy.service.auth.v3 import external_auth_pb2

from authz_service.doors.grpc_wire import AnswerEncoder, to_context
from authz_service.models import ANONYMOUS, Allow, Answer
from authz_service.policy.denials import insufficient_scope
from tests.kits.grpc_kit import check_request

with warnings.catch_warnings():
    # envoy-data-plane 2.2 uses a pydantic validator form deprecated in 2.12: theirs, not ours.
    warnings.simplefilter("ignore", pydantic.warnings.PydanticDeprecatedSince212)
    import envoy_data_plane.envoy.config.core.v3 as dp_core
    import envoy_data_plane.envoy.service.auth.v3 as dp_auth


def test_check_request_built_by_envoy_data_plane_reads_the_same() -> None:
    request = dp_auth.CheckRequest(
        attributes=dp_auth.AttributeContext(
            source=dp_auth.AttributeContextPeer(principal="spiffe://td/ns/a/sa/b"),
            request=dp_auth.AttributeContextRequest(
                http=dp_auth.AttributeContextHttpRequest(
                    id="r-9",
                    method="POST",
                    path="/orders?page=2",
                    host="api.test",
                    headers={"authorization": "Bearer abc", "x-request-id": "x"},
                    header_map=dp_core.HeaderMap(),
                )
            ),
            context_extensions={"tollgate_route": "orders-write"},
        )
    )
    ours = external_auth_pb2.CheckRequest.FromString(bytes(request))
    ctx = to_context(ours)
    assert (ctx.method, ctx.path, ctx.query, ctx.host) == ("POST", "/orders", "page=2", "api.test")
    assert ctx.headers["authorization"] == "Bearer abc"
    assert ctx.peer_principal == "spiffe://td/ns/a/sa/b"
    assert ctx.context_extensions["tollgate_route"] == "orders-write"
    # x-request-id, the id Envoy's access log and the upstream carry, over Envoy's stream id
    assert ctx.request_id == "x"


def test_denied_response_reads_the_same_in_envoy_data_plane() -> None:
    denial = insufficient_scope("tollgate", "orders:write", "r")
    wire = AnswerEncoder().encode(Answer(denial), "r-1")
    theirs = dp_auth.CheckResponse.parse(wire)
    assert theirs.status.code == 7  # PERMISSION_DENIED
    denied = theirs.denied_response
    assert denied.status.code == 403
    headers = {h.header.key: h.header.value for h in denied.headers}
    assert headers["www-authenticate"] == (
        'Bearer realm="tollgate", error="insufficient_scope", scope="orders:write"'
    )
    assert json.loads(denied.body)["error"] == "insufficient_scope"


def test_allowed_response_reads_the_same_in_envoy_data_plane() -> None:
    allow = Allow(ANONYMOUS, "public", headers=(("x-tollgate-identity", "anonymous"),),
                  remove_headers=("x-tollgate-subject",))
    theirs = dp_auth.CheckResponse.parse(AnswerEncoder().encode(Answer(allow), ""))
    assert theirs.status.code == 0
    ok = theirs.ok_response
    assert [(h.header.key, h.header.value) for h in ok.headers] == [
        ("x-tollgate-identity", "anonymous")
    ]
    assert ok.headers_to_remove == ["x-tollgate-subject"]


def test_headers_read_as_a_plain_read_only_mapping_in_both_forms() -> None:
    # The map form is read through a view of the message's own map (no copy per
    # request); asking it for a missing name must not insert '' the way the
    # protobuf map itself does, and it must not be writable.
    map_form = check_request(headers={"Authorization": "Bearer t", "x-a": "1"},
                             context_extensions={"tollgate_route": "r"})
    raw_form = check_request(raw_headers=[("Authorization", "Bearer t"), ("x-a", "1"),
                                          ("x-a", "2"), ("cookie", "a=1"), ("cookie", "b=2")])
    for request in (map_form, raw_form):
        ctx = to_context(request)
        assert ctx.headers["authorization"] == "Bearer t"
        assert ctx.headers.get("missing") is None
        assert "missing" not in ctx.headers
        with pytest.raises(KeyError):
            ctx.headers["missing"]
        assert "missing" not in ctx.headers
        with pytest.raises(TypeError):
            ctx.headers["x-new"] = "1"  # type: ignore[index]
    assert dict(to_context(map_form).headers) == {"authorization": "Bearer t", "x-a": "1"}
    assert "missing" not in map_form.attributes.request.http.headers
    assert to_context(map_form).context_extensions["tollgate_route"] == "r"
    assert to_context(map_form).duplicate_headers == frozenset()
    raw = to_context(raw_form)
    assert raw.headers["x-a"] == "1,2"
    assert raw.headers["cookie"] == "a=1; b=2"
    assert raw.duplicate_headers == frozenset({"x-a", "cookie"})
