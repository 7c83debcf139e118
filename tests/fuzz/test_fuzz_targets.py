"""The fuzz targets, bounded, inside ``make test``; and every crash they ever found, replayed.

* ``test_*_fuzz_bounded``: both atheris targets run side by side for ``FUZZ_SECONDS`` seconds
  each (default 15; 0 skips them), starting from the generated seeds. A crash fails the test
  with the traceback, the reproducer and how to keep it as a regression.
* ``test_regression``: every file in ``tests/fuzz/regressions/<target>/`` goes through the
  same checks as under the fuzzer, without atheris (a fresh broker for the live ones).
* The seeds pass the checks, and the harness and the runner notice what they must notice.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mqttbroker.errors import ProtocolError
from mqttbroker.protocol.codec import decode, encode
from mqttbroker.protocol.constants import PacketType
from mqttbroker.protocol.packets import Publish, Subscribe, Subscription
from tests.fuzz.decoder import check_decoder, read_frames
from tests.fuzz.live import LiveHarness, make_live_input, make_two_client_input, parse_live_input
from tests.fuzz.runner import (
    REGRESSIONS,
    TARGETS,
    Fuzzer,
    FuzzRun,
    fuzz_seconds,
    keep_crashes,
    run_bounded,
)
from tests.fuzz.seeds import decoder_seeds, live_seeds, two_client_seeds

SECONDS = fuzz_seconds()
# a bounded run is SECONDS per target, both at once; room for startup and the slowest input
BOUNDED_TIMEOUT = SECONDS + 180


def _need_atheris() -> None:
    if importlib.util.find_spec("atheris") is None:
        if sys.platform.startswith("linux"):
            pytest.fail("atheris is not installed: pip install -e '.[test]'")
        pytest.skip("atheris has wheels for Linux only")


@pytest.fixture(scope="module")
def bounded_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, FuzzRun]:
    if SECONDS <= 0:
        pytest.skip("FUZZ_SECONDS=0")
    _need_atheris()
    return run_bounded(TARGETS, SECONDS, tmp_path_factory.mktemp("fuzz"))


def _check_run(run: FuzzRun, min_cov: int) -> None:
    print(run.summary())
    if not run.ok:
        kept = keep_crashes(run)  # into tests/fuzz/crashes/, ready to become a regression
        pytest.fail(run.failure_report(crash=str(kept[0]) if len(kept) == 1 else None),
                    pytrace=False)
    # it really fuzzed, with coverage feedback (an uninstrumented target reports cov 0-2)
    assert int(run.stats.get("runs", 0)) > 100, run.summary()
    assert int(run.stats.get("cov", 0)) >= min_cov, run.summary()


@pytest.mark.timeout(BOUNDED_TIMEOUT)
def test_decoder_fuzz_bounded(bounded_runs: dict[str, FuzzRun]) -> None:
    _check_run(bounded_runs["decoder"], min_cov=300)


@pytest.mark.timeout(BOUNDED_TIMEOUT)
def test_live_fuzz_bounded(bounded_runs: dict[str, FuzzRun]) -> None:
    _check_run(bounded_runs["live"], min_cov=800)


# -- regressions --------------------------------------------------------------------------------

def _regression_files() -> list[Path]:
    return sorted(p for t in TARGETS for p in (REGRESSIONS / t).glob("*")
                  if p.is_file() and not p.name.startswith("."))


@pytest.fixture(scope="module")
def live_harness() -> Iterator[LiveHarness]:
    with LiveHarness() as h:
        yield h


@pytest.mark.parametrize("path", _regression_files(),
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_regression(path: Path, request: pytest.FixtureRequest) -> None:
    data = path.read_bytes()
    if path.parent.name == "decoder":
        check_decoder(data)
    else:
        harness: LiveHarness = request.getfixturevalue("live_harness")
        harness.check(data)


def test_every_target_has_a_regression_folder() -> None:
    for t in TARGETS:
        assert (REGRESSIONS / t).is_dir(), f"tests/fuzz/regressions/{t}/ is missing"


# -- seeds and harness ----------------------------------------------------------------------------

def test_decoder_seeds_decode_and_round_trip() -> None:
    seeds = decoder_seeds()
    decoded = sum(check_decoder(s) for s in seeds)
    assert decoded > 3 * 40  # every single-packet seed decodes at one level at least


def test_every_packet_type_is_seeded_at_every_level() -> None:
    decoded: dict[int, set[int]] = {3: set(), 4: set(), 5: set()}
    for s in decoder_seeds():
        frames, error, _ = read_frames(s, 1 << 20)
        for first, body in frames if error is None else []:
            for level, types in decoded.items():
                try:
                    types.add(decode(first, body, level).type)
                except ProtocolError:
                    pass
    every = set(range(PacketType.CONNECT, PacketType.AUTH))  # AUTH is MQTT 5 only
    assert decoded == {3: every, 4: every, 5: every | {PacketType.AUTH}}


def test_live_seeds_pass(live_harness: LiveHarness) -> None:
    for s in live_seeds() + two_client_seeds():
        live_harness.check(s)


def test_live_input_format_round_trips() -> None:
    for level in (3, 4, 5):
        for own in (False, True):
            for half in (False, True):
                inp = parse_live_input(make_live_input(level, b"xy", own, half))
                assert (inp.levels, inp.own_connect, inp.half_close, inp.segments) == (
                    (level,), (own,), half, ((0, b"xy"),))
    segments = [(0, b"a" * 200), (1, b"b"), (0, b"")]
    inp = parse_live_input(make_two_client_input((3, 5), segments, (False, True), True))
    assert (inp.levels, inp.own_connect, inp.half_close) == ((3, 5), (False, True), True)
    assert inp.segments == ((0, b"a" * 127), (0, b"a" * 73), (1, b"b"), (0, b""))


def test_two_clients_talk_through_the_broker(live_harness: LiveHarness) -> None:
    """A subscribes, then B publishes (each segment is handled before the next is sent): the
    broker delivers B's message to A."""
    broker = live_harness.bt.broker
    assert broker is not None

    def sent() -> int:
        return live_harness.bt.call(lambda: broker.metrics.publish_sent)

    sub = encode(Subscribe(1, [Subscription("fuzz/two", 1)]), 4)
    pub = encode(Publish("fuzz/two", b"hi", 1, False, False, 5), 4)
    before = sent()
    live_harness.check(make_two_client_input((4, 4), [(0, sub), (1, pub)]))
    assert sent() == before + 1


def test_live_harness_notices_an_internal_error(live_harness: LiveHarness) -> None:
    """An ERROR the broker logs while an input is handled fails that input."""
    logging.getLogger("mqttbroker.client").error("internal error handling client x")
    with pytest.raises(AssertionError, match="logged an error"):
        live_harness.check(make_live_input(4, b"\xc0\x00"))
    live_harness.check(make_live_input(4, b"\xc0\x00"))  # and the next input is judged alone


def test_live_harness_waits_for_a_frame_left_open(live_harness: LiveHarness) -> None:
    """An input that ends inside a frame is half-closed, not followed by a PINGREQ the broker
    would read as part of that frame."""
    live_harness.check(make_live_input(5, b"\x30\x10\x00\x03a/b"))
    live_harness.check(make_live_input(4, b"\x30\xff\xff\xff\xff\x01"))  # refused framing


@pytest.mark.timeout(120)
def test_runner_reports_a_crash_with_its_reproducer(tmp_path: Path) -> None:
    """A target that raises on a seed: the run fails, keeps the input, and says how to keep it
    as a regression test."""
    _need_atheris()
    script = tmp_path / "crashing_target.py"
    script.write_text(
        "import sys, atheris\n"
        "def one(data: bytes) -> None:\n"
        "    if data == b'\\xc0\\x00':\n"
        "        raise IndexError('planted bug')\n"
        "atheris.Setup(sys.argv, one)\n"
        "atheris.Fuzz()\n")
    run = Fuzzer("decoder", 20, tmp_path / "work", script=script).wait(100)
    assert not run.ok
    assert [a.read_bytes() for a in run.artifacts] == [b"\xc0\x00"]
    report = run.failure_report()
    assert "IndexError: planted bug" in report
    assert "b'\\xc0\\x00'" in report
    assert "tests/fuzz/regressions/decoder/" in report
