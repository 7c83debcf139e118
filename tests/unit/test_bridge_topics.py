"""Bridge topic mapping (bridge/topics.py): Mosquitto's ``topic pattern direction qos local
remote`` rules as pure functions."""

from __future__ import annotations

from mqttbroker.bridge import topics
from mqttbroker.config.bridges import BridgeTopic

RULES = (
    BridgeTopic("sensors/#", "out", 1, "", "site-7/"),
    BridgeTopic("commands/#", "in", 1, "", "site-7/"),
    BridgeTopic("shared/#", "both", 2, "local/", "remote/"),
)


def test_subscriptions_each_side_makes() -> None:
    assert topics.local_filters(RULES) == [("sensors/#", 1), ("local/shared/#", 2)]
    assert topics.remote_filters(RULES) == [("site-7/commands/#", 1), ("remote/shared/#", 2)]


def test_outbound_adds_the_remote_prefix() -> None:
    assert topics.outbound(RULES, "sensors/t/1") == ("site-7/sensors/t/1", 1)
    assert topics.outbound(RULES, "local/shared/x") == ("remote/shared/x", 2)
    assert topics.outbound(RULES, "commands/open") is None  # an "in" rule only
    assert topics.outbound(RULES, "shared/x") is None  # without the local prefix


def test_inbound_swaps_the_prefixes() -> None:
    assert topics.inbound(RULES, "site-7/commands/open") == "commands/open"
    assert topics.inbound(RULES, "remote/shared/x") == "local/shared/x"
    assert topics.inbound(RULES, "site-8/commands/open") is None
    assert topics.inbound(RULES, "site-7/sensors/t") is None  # an "out" rule only


def test_first_matching_rule_decides() -> None:
    rules = (BridgeTopic("a/#", "out", 0, "", "x/"), BridgeTopic("a/b", "out", 2, "", "y/"))
    assert topics.outbound(rules, "a/b") == ("x/a/b", 0)
