"""The peer API's bundle route serves a held wheel to a signed caller, and nothing else: no traversal, no secrets."""

from __future__ import annotations

import os

import pytest

from tests.faults.test_adversarial import (  # noqa: F401  (farm is a fixture)
    Farm,
    _server_views,
    assert_nothing_leaked,
    farm,
    peer,
)

pytestmark = pytest.mark.faults

WHEEL = "probe_recipes-1.0-py3-none-any.whl"


def _plant(farm: Farm) -> bytes:  # noqa: F811
    folder = farm.data_dir / "bundles" / "wheels" / "probe-recipes-1.0"
    folder.mkdir(parents=True, exist_ok=True)
    content = os.urandom(50_000)
    (folder / WHEEL).write_bytes(content)
    return content


def test_bundle_wheel_is_served_only_with_a_signature(farm: Farm) -> None:  # noqa: F811
    """A signed GET gets the wheel's bytes; an unsigned one or a foreign secret gets 401 and nothing."""
    content = _plant(farm)
    target = "/peer/v1/bundles/probe-recipes/1.0"
    assert peer(farm, target, secret=farm.secret).body == content
    for kwargs in ({}, {"secret": farm.other_secret}):
        reply = peer(farm, target, **kwargs)
        assert reply.status == 401 and content[:64] not in reply.body


TARGETS = [
    "/peer/v1/bundles/../../api_token",
    "/peer/v1/bundles/probe-recipes/..%2f..%2f..%2fapi_token",
    "/peer/v1/bundles/%2e%2e/%2e%2e",
    "/peer/v1/bundles/..%2f..%2fconfig.toml/1.0",
    "/peer/v1/bundles/probe-recipes/1.0%2f..%2f..%2f..%2fmarker.txt",
    "/peer/v1/bundles/probe-recipes/1.0/" + WHEEL,
    "/peer/v1/bundles/wheels/probe-recipes-1.0",
    "/peer/v1/bundles/probe-recipes/2.0",
    "/peer/v1/bundles/-rf/1.0",
]


@pytest.mark.parametrize("target", TARGETS)
def test_bundle_route_refuses_other_names_with_a_valid_signature(farm: Farm, target: str) -> None:  # noqa: F811
    """Each validly signed: 400/404 and no file's content (while the held wheel itself is served)."""
    content = _plant(farm)
    assert peer(farm, "/peer/v1/bundles/probe-recipes/1.0", secret=farm.secret).body == content
    statuses = []
    for view in _server_views(target):
        reply = peer(farm, target, secret=farm.secret, signed_path=view)
        assert reply.status in (400, 401, 404), (target, view, reply.status, reply.text[:300])
        assert_nothing_leaked(farm, reply, target)
        assert content[:64] not in reply.body
        statuses.append(reply.status)
    assert set(statuses) - {401}, f"no signature of {target} was accepted; the test did not reach the route"
