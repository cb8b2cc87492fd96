"""The OpenAPI documents tell a generated client (and the fuzzer, tests/test_fuzz_openapi.py) the truth:
the three ways to authenticate (madre's: also the fleet token, with the power key on writes), every error an
operation can answer, and the limits the server enforces."""

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db
DOCUMENTS = ["/api/openapi.json", "/madre/power/openapi.json"]
SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer"},
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    "session": {"type": "apiKey", "in": "cookie", "name": "sessionid"},
}
TOKEN_SCHEMES = {
    "vx11Token": {"type": "apiKey", "in": "header", "name": "X-VX11-Token"},
    "vx11PowerKey": {"type": "apiKey", "in": "header", "name": "X-VX11-POWER-KEY"},
}


def document(url: str) -> dict:
    r = Client().get(url)
    assert r.status_code == 200
    return r.json()


def operations(doc: dict):
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            yield path, method, op


@pytest.mark.parametrize("url", DOCUMENTS)
def test_every_operation_declares_the_api_key_schemes_and_the_session(url):
    doc = document(url)
    madre = url.startswith("/madre/")
    declared = doc["components"]["securitySchemes"]
    assert {name: {k: v for k, v in s.items() if k != "description"} for name, s in declared.items()} == (
        SCHEMES | TOKEN_SCHEMES if madre else SCHEMES
    )
    for path, method, op in operations(doc):
        token = [{"vx11Token": []}] if madre else []
        if madre and method != "get":  # applying with the token also needs the power key
            token.append({"vx11Token": [], "vx11PowerKey": []})
        assert op["security"] == [{"bearer": []}, {"apiKey": []}, {"session": []}, *token], (method, path)


@pytest.mark.parametrize("url", DOCUMENTS)
def test_every_operation_declares_the_errors_it_shares_with_all(url):
    doc = document(url)
    assert doc["components"]["schemas"]["Error"]["required"] == ["detail"]
    for path, method, op in operations(doc):
        codes = set(op["responses"])
        assert {"400", "401", "429"} <= codes, (method, path)
        # a write can be refused; on madre's paths a read too (a wrong X-VX11-Token)
        assert ("403" in codes) == (method != "get" or url.startswith("/madre/")), (method, path)
        if "{" in path:
            assert "404" in codes, (method, path)
        if op.get("parameters") or op.get("requestBody"):
            assert "422" in codes, (method, path)
        assert ("413" in codes) == ("requestBody" in op), (method, path)
        for code, response in op["responses"].items():
            if int(code) >= 400:
                assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
                assert response["description"]


@pytest.mark.parametrize(
    "method,path,codes",
    [
        ("post", "/api/modules", {"409"}),
        ("delete", "/api/modules/{slug}", {"409"}),
        ("post", "/api/daughters/{daughter_id}/cancel", {"409"}),
        ("post", "/api/flows", {"409"}),
        ("post", "/api/flows/{name}/run", {"409", "503"}),
        ("post", "/api/power/service/start", {"403", "404", "409", "502"}),
        ("post", "/api/power/service/{service}/{action}", {"403", "404", "409", "502"}),
        ("post", "/api/power/mode", {"403", "409", "502"}),
        ("post", "/api/power/window/open", {"403", "409"}),
        ("post", "/api/power/window/close", {"403", "404"}),
    ],
)
def test_a_route_declares_its_own_errors(method, path, codes):
    assert codes <= set(document("/api/openapi.json")["paths"][path][method]["responses"])


def test_the_limits_the_server_enforces_are_in_the_documents(settings):
    settings.VX11_POWER_WINDOW_MAX_TTL = 3600
    for url in DOCUMENTS:
        window = document(url)["components"]["schemas"]["WindowIn"]["properties"]
        assert (window["ttl_sec"]["minimum"], window["ttl_sec"]["maximum"]) == (1, 3600)
        assert (window["services"]["minItems"], window["services"]["maxItems"]) == (1, 50)
        assert window["reason"]["maxLength"] == 500
    doc = document("/api/openapi.json")
    paging = {p["name"]: p["schema"] for p in doc["paths"]["/api/modules"]["get"]["parameters"]}
    assert (paging["limit"]["minimum"], paging["limit"]["maximum"]) == (1, settings.NINJA_PAGINATION_MAX_LIMIT)
    assert (paging["offset"]["minimum"], paging["offset"]["maximum"]) == (0, 2**62)
    action = doc["paths"]["/api/power/service/{service}/{action}"]["post"]
    service = {p["name"]: p["schema"] for p in action["parameters"]}
    assert (service["service"]["minLength"], service["service"]["maxLength"]) == (1, 64)
