"""Machine labels on the pages: hostnames, told apart by client id where they repeat."""

from __future__ import annotations

from app.client_labels import client_labels
from app.elastic_view import build


def test_unique_hostnames_are_the_labels_and_repeated_ones_get_the_client_id() -> None:
    labels = client_labels({"c0ffee11aa": "ubuntu", "beef2222bb": "ubuntu", "d00d3333cc": "lab-7", "e4": None})
    assert labels == {"c0ffee11aa": "ubuntu (c0ffee11)", "beef2222bb": "ubuntu (beef2222)", "d00d3333cc": "lab-7"}


def test_an_elastic_group_on_one_host_shows_each_member_apart() -> None:
    """Three agents on one host (as in a trial run on one machine): three different names in the group's card."""
    members = [{"client_id": f"{n}0000000-agent", "rank": rank, "status": "running", "metrics": {"share": 8}}
               for rank, n in enumerate("abc")]
    view = build({"n_clients": 3, "min_clients": 2}, {"elastic": {"contributions": {"a0000000-agent": 10}}},
                 members, [], {m["client_id"]: "box" for m in members})
    assert sorted(view.hostnames.values()) == ["box (a0000000)", "box (b0000000)", "box (c0000000)"]
