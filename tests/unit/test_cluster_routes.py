"""The cluster's routing table replica (mqttbroker/cluster/routes.py): pure, no Redis."""

from __future__ import annotations

from mqttbroker.cluster.routes import RouteReplica


def test_match_finds_plain_routes_per_node_with_wildcards() -> None:
    r = RouteReplica()
    r.put("a", "sensors/#", 2)
    r.put("b", "sensors/+/temp", 1)
    r.put("c", "other/#", 1)
    assert r.match("sensors/7/temp") == ({"a", "b"}, {})
    assert r.match("sensors/7/rh") == ({"a"}, {})
    assert r.match("nothing") == (set(), {})


def test_a_count_of_zero_removes_the_route_and_drop_forgets_a_node() -> None:
    r = RouteReplica()
    r.put("a", "t/#", 1)
    r.put("b", "t/#", 3)
    r.put("a", "t/#", 0)
    assert r.match("t/x") == ({"b"}, {})
    assert r.routes("b") == {"t/#": 3}
    r.drop("b")
    assert r.match("t/x") == (set(), {}) and r.nodes() == []


def test_replace_reloads_a_node() -> None:
    r = RouteReplica()
    r.put("a", "old/#", 1)
    r.replace("a", [("new/#", 2)])
    assert r.match("old/x") == (set(), {}) and r.match("new/x") == ({"a"}, {})


def test_shared_groups_by_node_and_round_robin_pick_mqtt_4_8_2() -> None:
    r = RouteReplica()
    r.put("a", "$share/g/jobs/#", 1)
    r.put("b", "$share/g/jobs/#", 2)
    r.put("b", "$share/h/jobs/+", 1)
    direct, groups = r.match("jobs/1")
    assert direct == set()
    assert {k: sorted(v) for k, v in groups.items()} == {"$share/g/jobs/#": ["a", "b"],
                                                       "$share/h/jobs/+": ["b"]}
    picks = [r.pick("$share/g/jobs/#", ["b", "a"]) for _ in range(4)]
    assert picks == ["a", "b", "a", "b"]  # spread over the group's nodes
