"""benchmarks/footprint.py: its reading of a callgrind dump, and one short run under valgrind."""

from __future__ import annotations

import shutil

import pytest

from benchmarks import footprint

# A dump as callgrind writes it with --dump-instr=yes: object and function names compressed
# to "(n)" after their first use, addresses relative to the line before ("+n", "-n", "*"),
# and after each calls= line the call's inclusive cost at the call site.
DUMP = """\
# callgrind format
version: 1
creator: callgrind-3.19.0
positions: instr line
events: Ir
summary: 1320

ob=(1) /usr/lib/x86_64-linux-gnu/libc.so.6
fl=(1) ???
fn=(1) hot
0x1000 0 100
+4 * 100
+60 * 100
-30 * 5
cob=(2) /work/compiled/4b4f__mypyc.cpython-311-x86_64-linux-gnu.so
cfn=(2) callee
calls=100 0x9000 0
* * 900
+2 * 100
ob=(2)
fn=(2)
0x9000 0 100
+64 * 99
+64 * 50
ob=(1)
fn=(1)
0x1100 0 1
"""


def test_parse_counts_hot_lines_and_skips_inclusive_call_costs() -> None:
    fp = footprint.parse(DUMP.splitlines(), messages=100, hot=0.9)
    assert fp.instructions == 1320  # callgrind's own summary
    # 64-byte lines (address >> 6) and their most runs: 0x40 (0x1000, 0x1004, 0x1024: 100;
    # 0x1022: 5, and its 900 after calls= is the callee's, not its own), 0x41 (0x1040: 100),
    # 0x240 (0x9000: 100), 0x241 (0x9040: 99), 0x242 (0x9080: 50), 0x44 (0x1100: 1)
    assert fp.hot_lines == 4
    assert fp.lines == 6
    assert fp.hot_pages == 2  # 0x1000-0x1fff and 0x9000-0x9fff
    assert fp.hot_by_object == {"libc": 2, "ours (mypyc)": 2}
    assert fp.per_message == pytest.approx(13.2)


def test_parse_without_summary_sums_the_cost_lines() -> None:
    text = DUMP.replace("summary: 1320\n", "")
    fp = footprint.parse(text.splitlines(), messages=100)
    assert fp.instructions == 100 + 100 + 100 + 5 + 100 + 100 + 99 + 50 + 1


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="`make valgrind` installs it")
def test_null_relay_under_callgrind() -> None:
    """The whole path, bounded: the null relay under callgrind, 100 msg/s for 2 s counted.
    Its per-message figures are those of a Python relay on uvloop: some thousands of
    instructions (22k on this machine), hundreds of hot code lines (~630)."""
    fp = footprint.measure("null", rate=100.0, seconds=2.0, hot=0.9)
    assert 150 <= fp.messages <= 260  # rate x window, each end known to ~0.1 s
    assert 5_000 < fp.per_message < 100_000
    assert 100 < fp.hot_lines < 3_000
    assert fp.hot_pages <= fp.hot_lines
    assert fp.hot_by_object.get("libpython3.11", 0) > 0
    assert fp.hot_by_object.get("uvloop", 0) > 0
