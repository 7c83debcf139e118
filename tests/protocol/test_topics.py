"""Topic names, topic filters and the two matching trees [MQTT 4.7].

One table of (filter, topic, matches) is checked against all three matchers:
``topic_matches`` (the reference), ``SubscriptionTree.match`` (filters stored, topic asked) and
``RetainedTree.match`` (topics stored, filter asked). Hypothesis then checks the trees agree with
the reference on random filters and topics over a small alphabet of levels.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mqttbroker.errors import ProtocolError
from mqttbroker.protocol.constants import ReasonCode
from mqttbroker.protocol.topics import (
    RetainedTree,
    SubscriptionTree,
    malformed_filter,
    topic_filter_problem,
    topic_matches,
    validate_topic_name,
)

SETTINGS = settings(max_examples=200, deadline=None)

# (filter, topic, matches, why)
MATCH_TABLE: list[tuple[str, str, bool, str]] = [
    # [MQTT 4.7.1.2] multi-level wildcard
    ("sport/tennis/player1/#", "sport/tennis/player1", True, "4.7.1.2 # matches the parent"),
    ("sport/tennis/player1/#", "sport/tennis/player1/ranking", True, "4.7.1.2"),
    ("sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", True, "4.7.1.2"),
    ("sport/tennis/#", "sport/tennis", True, "4.7.1.2 parent level"),
    ("sport/tennis/#", "sport/tennis/player1", True, "4.7.1.2"),
    ("sport/tennis/#", "sport/tennisplayer1", False, "levels are whole"),
    ("sport/tennis/#", "sport", False, "too short"),
    ("sport/#", "sport", True, "4.7.1.2 'sport/#' also matches 'sport'"),
    ("sport/#", "sport/", True, "empty last level"),
    ("sport/#", "sports", False, "levels are whole"),
    ("#", "sport", True, "# matches everything"),
    ("#", "sport/tennis/player1", True, "# matches everything"),
    ("#", "/", True, "# matches two empty levels"),
    ("#", "/finance", True, "# matches a leading empty level"),
    # [MQTT 4.7.1.3] single-level wildcard
    ("sport/tennis/+", "sport/tennis/player1", True, "4.7.1.3"),
    ("sport/tennis/+", "sport/tennis/player2", True, "4.7.1.3"),
    ("sport/tennis/+", "sport/tennis/player1/ranking", False, "4.7.1.3 only one level"),
    ("sport/tennis/+", "sport/tennis", False, "+ needs a level"),
    ("sport/tennis/+", "sport/tennis/", True, "+ matches an empty level"),
    ("sport/+", "sport", False, "4.7.1.3 'sport/+' does not match 'sport'"),
    ("sport/+", "sport/", True, "4.7.1.3 'sport/+' matches 'sport/'"),
    ("+", "sport", True, "one level"),
    ("+", "/finance", False, "4.7.1.3 '+' does not match '/finance'"),
    ("+/+", "/finance", True, "4.7.1.3 '+/+' matches '/finance'"),
    ("/+", "/finance", True, "4.7.1.3 '/+' matches '/finance'"),
    ("+", "/", False, "two empty levels"),
    ("+/+", "/", True, "two empty levels"),
    ("+/tennis/#", "sport/tennis/player1", True, "mixed"),
    ("+/tennis/#", "sport/tennis", True, "mixed, # parent"),
    ("+/tennis/#", "sport/golf", False, "mixed"),
    ("sport/+/player1", "sport/tennis/player1", True, "middle +"),
    ("sport/+/player1", "sport/golf/player1", True, "middle +"),
    ("sport/+/player1", "sport/tennis/player2", False, "middle +"),
    ("+/+/+", "a/b/c", True, "all +"),
    ("+/+/+", "a/b", False, "all +, too short"),
    ("+/+/+", "a/b/c/d", False, "all +, too long"),
    ("a/+/#", "a", False, "+ needs its level before # can match the parent"),
    ("a/+/#", "a/b", True, "# parent after +"),
    ("a/+/#", "a/b/c/d", True, "+ then #"),
    ("+/#", "a", True, "+ then # parent"),
    # empty levels [MQTT 4.7.3]
    ("/", "/", True, "two empty levels"),
    ("a//b", "a//b", True, "empty middle level"),
    ("a/+/b", "a//b", True, "+ matches an empty middle level"),
    ("a//b", "a/b", False, "empty level is a level"),
    ("a/", "a", False, "trailing slash is a level"),
    ("a", "a/", False, "trailing slash is a level"),
    ("/finance", "finance", False, "4.7.3 '/finance' and 'finance' differ"),
    ("finance", "/finance", False, "4.7.3"),
    ("//", "//", True, "three empty levels"),
    ("+/+/+", "//", True, "three empty levels"),
    # exact, case sensitive, no normalisation [MQTT-4.7.3-4]
    ("sport/tennis", "sport/tennis", True, "exact"),
    ("ACCOUNTS", "Accounts", False, "4.7.3 case sensitive"),
    ("Accounts payable", "Accounts payable", True, "4.7.3 spaces are valid"),
    ("caf\u00e9", "cafe\u0301", False, "MQTT-4.7.3-4 no Unicode normalisation"),
    ("\u20ac/+", "\u20ac/x", True, "multibyte levels"),
    # [MQTT-4.7.2-1] topics beginning with $
    ("#", "$SYS/x", False, "MQTT-4.7.2-1"),
    ("#", "$SYS", False, "MQTT-4.7.2-1"),
    ("+/monitor/Clients", "$SYS/monitor/Clients", False, "MQTT-4.7.2-1"),
    ("+", "$SYS", False, "MQTT-4.7.2-1"),
    ("+/#", "$SYS/x", False, "MQTT-4.7.2-1"),
    ("$SYS/#", "$SYS/x", True, "4.7.2 $SYS/# matches"),
    ("$SYS/#", "$SYS", True, "4.7.2 # parent"),
    ("$SYS/monitor/+", "$SYS/monitor/Clients", True, "4.7.2"),
    ("$SYS/+/Clients", "$SYS/monitor/Clients", True, "4.7.2"),
    ("$SYS", "$SYS", True, "exact $"),
    ("$foo/#", "$foo/bar", True, "any $ topic"),
    ("a/#", "a/$b", True, "$ only matters in the first level"),
    ("a/+", "a/$b", True, "$ only matters in the first level"),
    ("#", "x$", True, "$ not first"),
    ("+", "x$", True, "$ not first"),
]

_IDS = [f"{f!r}~{t!r}" for f, t, _, _ in MATCH_TABLE]


def test_table_is_large_enough() -> None:
    assert len(MATCH_TABLE) >= 40


@pytest.mark.parametrize(("flt", "topic", "expected", "why"), MATCH_TABLE, ids=_IDS)
def test_topic_matches_table(flt: str, topic: str, expected: bool, why: str) -> None:
    assert topic_matches(flt, topic) is expected, why


@pytest.mark.parametrize(("flt", "topic", "expected", "why"), MATCH_TABLE, ids=_IDS)
def test_subscription_tree_match_table(flt: str, topic: str, expected: bool, why: str) -> None:
    tree: SubscriptionTree[str, int] = SubscriptionTree()
    tree.add(flt, "c1", 1)
    tree.add("unrelated/filter", "c2", 2)
    groups = tree.match(topic)
    got = [k for g in groups for k in g if k == "c1"]
    assert got == (["c1"] if expected else []), why


@pytest.mark.parametrize(("flt", "topic", "expected", "why"), MATCH_TABLE, ids=_IDS)
def test_retained_tree_match_table(flt: str, topic: str, expected: bool, why: str) -> None:
    tree: RetainedTree[str] = RetainedTree()
    tree.set(topic, topic)
    tree.set("unrelated/topic", "unrelated/topic")
    assert tree.match(flt).count(topic) == (1 if expected else 0), why


def test_subscription_tree_match_whole_table_at_once() -> None:
    """All filters of the table in one tree: each topic gets exactly its matching filters."""
    tree: SubscriptionTree[str, str] = SubscriptionTree()
    filters = sorted({f for f, _, _, _ in MATCH_TABLE})
    for f in filters:
        tree.add(f, f, f)
    for _, topic, _, _ in MATCH_TABLE:
        got = sorted(k for g in tree.match(topic) for k in g)
        assert got == [f for f in filters if topic_matches(f, topic)], topic


def test_retained_tree_match_whole_table_at_once() -> None:
    tree: RetainedTree[str] = RetainedTree()
    topics = sorted({t for _, t, _, _ in MATCH_TABLE})
    for t in topics:
        tree.set(t, t)
    for flt, _, _, _ in MATCH_TABLE:
        assert sorted(tree.match(flt)) == [t for t in topics if topic_matches(flt, t)], flt


# ---- validation --------------------------------------------------------------------------------

FILTERS: list[tuple[str, bool, str]] = [
    ("sport/tennis/player1", True, "plain"),
    ("#", True, "4.7.1.2 # alone"),
    ("sport/#", True, "4.7.1.2"),
    ("sport/tennis/#", True, "4.7.1.2"),
    ("+", True, "4.7.1.3 + alone"),
    ("+/tennis/#", True, "4.7.1.3"),
    ("sport/+/player1", True, "4.7.1.3"),
    ("+/+", True, "4.7.1.3"),
    ("/+", True, "4.7.1.3"),
    ("+/", True, "+ then empty level"),
    ("/", True, "4.7.3 a lone separator is valid"),
    ("//", True, "empty levels"),
    ("$SYS/#", True, "$ filters"),
    ("$share/group/a/b", True, "looks like a shared subscription"),
    (" ", True, "a space is a character"),
    ("", False, "MQTT-4.7.3-1 at least one character"),
    ("sport/tennis#", False, "MQTT-4.7.1-2 # must follow a separator"),
    ("sport/tennis/#/ranking", False, "MQTT-4.7.1-2 # must be last"),
    ("#/", False, "MQTT-4.7.1-2 # must be last"),
    ("##", False, "MQTT-4.7.1-2"),
    ("a/#/#", False, "MQTT-4.7.1-2"),
    ("#a", False, "MQTT-4.7.1-2"),
    ("sport+", False, "MQTT-4.7.1-3 + must occupy a whole level"),
    ("sport/+player1", False, "MQTT-4.7.1-3"),
    ("+sport", False, "MQTT-4.7.1-3"),
    ("++", False, "MQTT-4.7.1-3"),
    ("a/++/b", False, "MQTT-4.7.1-3"),
    ("+#", False, "MQTT-4.7.1-2/3"),
    ("a/b+/#", False, "MQTT-4.7.1-3"),
]


@pytest.mark.parametrize(("flt", "valid", "why"), FILTERS, ids=[repr(f[0]) for f in FILTERS])
def test_topic_filter_problem_table(flt: str, valid: bool, why: str) -> None:
    problem = topic_filter_problem(flt)
    if valid:
        assert problem is None, why
    else:
        assert isinstance(problem, str) and problem, why


@pytest.mark.parametrize(("flt", "v311", "v5"), [
    ("", "MQTT-4.7.3-1", "MQTT-4.7.3-1"),
    ("#/test/topic", "MQTT-4.7.1-2", "MQTT-4.7.1-1"),
    ("a/b#", "MQTT-4.7.1-2", "MQTT-4.7.1-1"),
    ("a+/b", "MQTT-4.7.1-3", "MQTT-4.7.1-2"),
    ("$share/g/#/x", "MQTT-4.7.1-2", "MQTT-4.7.1-1"),  # a shared subscription's own filter
    ("$share/g/a+", "MQTT-4.7.1-3", "MQTT-4.7.1-2"),
])
def test_malformed_filter_cites_the_rule_of_its_version(flt: str, v311: str, v5: str) -> None:
    """A malformed filter names the rule it breaks, numbered as the client's version numbers
    it (3.1.1 and 5.0 number the wildcard rules differently)."""
    assert f"[{v311}]" in (malformed_filter(flt) or "")
    assert f"[{v5}]" in (malformed_filter(flt, v5=True) or "")


@pytest.mark.parametrize("flt", ["$share/g+/x", "$share//x", "$share/g", "$share/g/",
                                 "$share/#/x", "a/+/#", "$share/g/a/+/#"])
def test_share_prefix_problems_are_refusals_not_malformed_mqtt_4_8_2_2(flt: str) -> None:
    """A bad ``$share/{ShareName}/`` prefix is refused per filter (SUBACK 0x8F), not a
    malformed packet; well-formed filters are neither."""
    assert malformed_filter(flt) is None and malformed_filter(flt, v5=True) is None


@pytest.mark.parametrize("topic", ["a", "a/b", "/", "/finance", "a//b", "$SYS/x", " ",
                                   "caf\u00e9", "a b/c", "x" * 1000, "$"])
def test_validate_topic_name_accepts(topic: str) -> None:
    validate_topic_name(topic)


@pytest.mark.parametrize("topic", ["+", "#", "a/+", "a/#", "a/+/b", "sport+", "a#", "+/x"])
def test_validate_topic_name_rejects_wildcards_mqtt_3_3_2_2(topic: str) -> None:
    """[MQTT-3.3.2-2] [MQTT-4.7.1-1] no wildcard characters in a topic name."""
    with pytest.raises(ProtocolError) as exc:
        validate_topic_name(topic)
    assert exc.value.code == ReasonCode.TOPIC_NAME_INVALID


def test_validate_topic_name_rejects_empty_mqtt_4_7_3_1() -> None:
    """[MQTT-4.7.3-1] topic names are at least one character long."""
    with pytest.raises(ProtocolError) as exc:
        validate_topic_name("")
    assert exc.value.code in (ReasonCode.PROTOCOL_ERROR, ReasonCode.TOPIC_NAME_INVALID)


# ---- property tests: the trees agree with the reference ------------------------------------

LEVEL = st.sampled_from(["a", "b", "", "$x", "c"])
topic_st = st.lists(LEVEL, min_size=1, max_size=5).map("/".join).filter(bool)


@st.composite
def filter_st(draw: st.DrawFn) -> str:
    levels = draw(st.lists(st.sampled_from(["a", "b", "", "$x", "+"]), min_size=1, max_size=5))
    if draw(st.booleans()):
        levels.append("#")
    return "/".join(levels) or "#"  # [MQTT-4.7.3-1] a filter is never empty


@SETTINGS
@given(st.lists(filter_st(), max_size=12), st.lists(topic_st, min_size=1, max_size=6))
def test_subscription_tree_agrees_with_topic_matches(filters: list[str],
                                                     topics: list[str]) -> None:
    tree: SubscriptionTree[int, str] = SubscriptionTree()
    for i, f in enumerate(filters):
        assert topic_filter_problem(f) is None
        tree.add(f, i, f)
    for t in topics:
        got = sorted(k for g in tree.match(t) for k in g)
        assert got == [i for i, f in enumerate(filters) if topic_matches(f, t)], t


@SETTINGS
@given(st.lists(topic_st, max_size=12), st.lists(filter_st(), min_size=1, max_size=6))
def test_retained_tree_agrees_with_topic_matches(topics: list[str], filters: list[str]) -> None:
    tree: RetainedTree[str] = RetainedTree()
    for t in topics:
        tree.set(t, t)
    stored = sorted(set(topics))
    assert tree.count == len(stored)
    for f in filters:
        assert sorted(tree.match(f)) == [t for t in stored if topic_matches(f, t)], f


@SETTINGS
@given(filter_st(), topic_st)
def test_each_group_holds_each_key_once(flt: str, topic: str) -> None:
    """A single filter never yields its subscriber twice for one topic."""
    tree: SubscriptionTree[str, int] = SubscriptionTree()
    tree.add(flt, "k", 0)
    hits = [k for g in tree.match(topic) for k in g]
    assert hits == (["k"] if topic_matches(flt, topic) else [])


@SETTINGS
@given(st.lists(st.tuples(filter_st(), st.integers(0, 3)), max_size=15), st.randoms())
def test_subscription_tree_add_remove_prunes_to_empty(entries: list[tuple[str, int]],
                                                      rnd: object) -> None:
    tree: SubscriptionTree[int, str] = SubscriptionTree()
    unique = set(entries)
    for f, k in entries:
        tree.add(f, k, f)
    assert tree.count == len(unique)
    assert sorted((f, k) for f, k, _ in tree.items()) == sorted(unique)
    order = sorted(unique)
    rnd.shuffle(order)  # type: ignore[attr-defined]
    for n, (f, k) in enumerate(order, 1):
        assert tree.get(f, k) == f
        assert tree.remove(f, k) is True
        assert tree.remove(f, k) is False
        assert tree.get(f, k) is None
        assert tree.count == len(unique) - n
    assert tree.count == 0
    assert tree._root.children == {} and tree._root.subs == {}
    assert list(tree.items()) == []


@SETTINGS
@given(st.lists(topic_st, max_size=15), st.randoms())
def test_retained_tree_set_delete_prunes_to_empty(topics: list[str], rnd: object) -> None:
    tree: RetainedTree[str] = RetainedTree()
    for t in topics:
        tree.set(t, t)
    unique = sorted(set(topics))
    assert tree.count == len(unique)
    assert sorted(tree.values()) == unique
    rnd.shuffle(unique)  # type: ignore[attr-defined]
    for n, t in enumerate(unique, 1):
        assert tree.get(t) == t
        assert tree.delete(t) is True
        assert tree.delete(t) is False
        assert tree.get(t) is None
        assert tree.count == len(set(topics)) - n
    assert tree.count == 0
    assert tree._root.children == {} and tree._root.value is None


# ---- tree details ------------------------------------------------------------------------------

def test_subscription_tree_add_replaces_value_for_same_key() -> None:
    tree: SubscriptionTree[str, int] = SubscriptionTree()
    assert tree.add("a/+", "c", 1) is True
    assert tree.add("a/+", "c", 2) is False
    assert tree.count == 1
    assert tree.match("a/b") == [{"c": 2}]


def test_subscription_tree_remove_keeps_siblings_and_ancestors() -> None:
    tree: SubscriptionTree[str, int] = SubscriptionTree()
    tree.add("a", "c", 0)
    tree.add("a/b/c", "c", 0)
    tree.add("a/b/d", "c", 0)
    assert tree.remove("a/b/c", "c")
    assert tree.get("a", "c") == 0 and tree.get("a/b/d", "c") == 0
    assert tree.remove("a/b/d", "c")
    assert "b" not in tree._root.children["a"].children  # pruned up to the kept node
    assert tree.remove("a", "c")
    assert tree._root.children == {}


def test_subscription_tree_remove_unknown() -> None:
    tree: SubscriptionTree[str, int] = SubscriptionTree()
    tree.add("a/b", "c", 0)
    assert tree.remove("a/b", "other") is False
    assert tree.remove("a", "c") is False  # a prefix node without subscribers
    assert tree.remove("x/y", "c") is False
    assert tree.count == 1


def test_retained_tree_delete_keeps_descendants() -> None:
    tree: RetainedTree[str] = RetainedTree()
    tree.set("a", "A")
    tree.set("a/b", "AB")
    assert tree.delete("a") is True
    assert tree.get("a/b") == "AB" and tree.get("a") is None
    assert tree.delete("a") is False
    assert tree.match("a/#") == ["AB"]


def test_retained_tree_set_replaces() -> None:
    tree: RetainedTree[str] = RetainedTree()
    tree.set("a/b", "1")
    tree.set("a/b", "2")
    assert tree.count == 1 and tree.get("a/b") == "2" and tree.match("a/+") == ["2"]


def test_retained_tree_hash_filter_excludes_dollar_topics_mqtt_4_7_2_1() -> None:
    tree: RetainedTree[str] = RetainedTree()
    for t in ("$SYS/broker/uptime", "$SYS", "a", "/a"):
        tree.set(t, t)
    assert sorted(tree.match("#")) == ["/a", "a"]
    assert sorted(tree.match("+")) == ["a"]
    assert sorted(tree.match("+/a")) == ["/a"]
    assert sorted(tree.match("$SYS/#")) == ["$SYS", "$SYS/broker/uptime"]


# ---- depth: no recursion ----------------------------------------------------------------------

DEEP = 10_000


def test_deep_topic_and_deep_plus_filter_match_without_recursion_error() -> None:
    topic = "/".join(["l"] * DEEP)
    plus = "/".join(["+"] * DEEP)
    assert topic_matches(plus, topic)
    assert topic_matches("#", topic)
    assert not topic_matches(plus, topic + "/x")

    subs: SubscriptionTree[str, int] = SubscriptionTree()
    subs.add(plus, "plus", 0)
    subs.add(topic, "exact", 0)
    subs.add("l/#", "hash", 0)
    got = sorted(k for g in subs.match(topic) for k in g)
    assert got == ["exact", "hash", "plus"]
    assert sorted(k for g in subs.match(topic + "/x") for k in g) == ["hash"]
    assert sorted(f[:5] for f, _, _ in subs.items()) == ["+/+/+", "l/#", "l/l/l"]
    assert subs.remove(plus, "plus") and subs.remove(topic, "exact") and subs.remove("l/#", "hash")
    assert subs.count == 0 and subs._root.children == {}

    ret: RetainedTree[str] = RetainedTree()
    ret.set(topic, "deep")
    assert ret.match(plus) == ["deep"]
    assert ret.match("#") == ["deep"]
    assert ret.match(topic) == ["deep"]
    assert ret.match("l/#") == ["deep"]
    assert list(ret.values()) == ["deep"]
    assert ret.delete(topic) and ret.count == 0 and ret._root.children == {}


def test_many_plus_filters_against_deep_topic_stay_linear() -> None:
    """'+' at every level plus literal siblings: the walk visits each node once per path."""
    subs: SubscriptionTree[int, int] = SubscriptionTree()
    depth = 2_000
    for i in range(0, depth, 100):
        subs.add("/".join(["+"] * i + ["#"]), i, 0)
    topic = "/".join(["l"] * depth)
    got = sorted(k for g in subs.match(topic) for k in g)
    assert got == list(range(0, depth, 100))
