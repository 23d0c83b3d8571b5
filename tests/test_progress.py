"""The one progress line used by training, downloads, hashing and decoding."""

from __future__ import annotations

import io

from smallnets.progress import Progress, format_bytes, format_duration


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_file_gets_plain_lines_not_carriage_returns():
    log = io.StringIO()
    with Progress("decoding images", 10, stream=log, log_every_s=3600) as bar:
        for _ in range(10):
            bar.update(1)
    text = log.getvalue()
    assert "\r" not in text and "\033" not in text
    lines = text.splitlines()
    # the first update, then nothing until the next period (an hour here) but the completed state, once
    assert len(lines) == 2 and lines[0].startswith("decoding images: 1/10 (10%)")
    assert lines[1].startswith("decoding images: 10/10 (100%)") and "images/s" in lines[1]


def test_the_first_update_is_written_whatever_the_clock_reads():
    # perf_counter's zero is arbitrary (often the boot): a period longer than any uptime shows that the
    # first line does not wait for one period to pass since that zero
    for terminal in (False, True):
        out = _Terminal() if terminal else io.StringIO()
        bar = Progress("hashing x", 5, stream=out, interval=1e15, log_every_s=1e15)
        bar.update(1)
        assert out.getvalue().lstrip("\r").startswith("hashing x: 1/5 (20%)")


def test_a_terminal_line_is_redrawn_and_ended():
    term = _Terminal()
    bar = Progress("epoch 1/3", 4, unit="steps", rate_unit="img", stream=term, interval=0.0, initial=1)
    for _ in range(3):
        bar.update(1, items=32, loss=2.5, lr=0.1)
    bar.close()
    bar.close()  # a second close is a no-op
    text = term.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n") and text.count("\r") == 4
    last = text.rstrip("\n").split("\r")[-1]
    assert last.startswith("epoch 1/3: 4/4 (100%) loss 2.5 lr 0.1") and " img/s " in last
    assert bar.items == 96 and bar.done == 4  # work done before the start counts towards the total only


def test_unknown_totals_and_bytes():
    log = io.StringIO()
    with Progress("extracting x.tar", None, unit="files", stream=log) as bar:
        bar.update(3)
    assert log.getvalue().startswith("extracting x.tar: 3 files ") and "<" not in log.getvalue()
    log = io.StringIO()
    with Progress("downloading w.pth", 3_000_000, unit="bytes", stream=log, initial=1_000_000) as bar:
        bar.update(2_000_000)
    assert log.getvalue().startswith("downloading w.pth: 3.0 MB/3.0 MB (100%) ") and "B/s " in log.getvalue()
    assert format_bytes(999) == "999 B" and format_bytes(1_500_000) == "1.5 MB"
    assert format_duration(61) == "01:01" and format_duration(3661) == "1:01:01" and format_duration(float("inf")) == "?"


def test_reaching_the_total_is_written_once_not_at_every_later_update():
    # a reader that reports bytes consumed reaches 100% while it still works through buffered data
    log = io.StringIO()
    with Progress("reading x.tar.gz", 100, unit="bytes", stream=log, log_every_s=1e15) as bar:
        bar.update(40)
        bar.update(60)
        for _ in range(20):
            bar.update(0)
    lines = log.getvalue().splitlines()
    assert [line.split(" (")[0] for line in lines] == ["reading x.tar.gz: 40 B/100 B", "reading x.tar.gz: 100 B/100 B"]
