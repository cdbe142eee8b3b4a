"""Progress of long work: a bar on a terminal, one plain line every few seconds in a log.

tqdm redraws its bar in place with '\\r', which a log file (CI, ``nohup``, a sweep worker's output) keeps as one
ever-growing line, and with ``disable=None`` it shows nothing there at all. ``progress_bar`` keeps tqdm's bar
when the stream is a terminal (or a notebook) and otherwise writes tqdm's plain status through ``LogLines``: a
line when the work starts, at most one per ``interval`` seconds while it runs, and one when it ends.
"""
from __future__ import annotations

import re
import sys
from typing import IO, Any, Iterable, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")

LOG_INTERVAL = 5.0
"""Seconds between two progress lines when the stream is not a terminal."""
LOG_FORMAT = "{desc}: {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}]{postfix}"
"""tqdm's status without the bar: "eval: 3/8 [00:05<00:08, 1.66s/it, ...]"."""
_CONTROL = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # cursor moves tqdm writes for stacked bars
_TIMING = re.compile(r" \[[^\]]*\]")  # "[elapsed<remaining, rate]": the part of a status that moves by itself


class LogLines:
    """A file for tqdm that turns each in-place redraw ('\\r' + status + padding) into one line of ``stream``,
    leaving out a redraw that differs from the last line only in its timing (tqdm's close redraws once more)."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.last = ""

    def write(self, text: str) -> None:
        for line in _CONTROL.sub("", text).replace("\r", "\n").split("\n"):
            line = line.rstrip()
            if line and _TIMING.sub("", line) != self.last:
                self.stream.write(line + "\n")
                self.last = _TIMING.sub("", line)

    def flush(self) -> None:
        getattr(self.stream, "flush", lambda: None)()


def is_terminal(stream: Any) -> bool:
    """Whether ``stream`` is an interactive terminal (where a redrawn bar reads well)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def in_notebook() -> bool:
    """Whether tqdm.auto picked the notebook widget (a Jupyter kernel), which needs no terminal."""
    return any(c.__module__ == "tqdm.notebook" for c in tqdm.__mro__)


def progress_bar(iterable: Iterable[T] | None = None, *, total: int | None = None, desc: str | None = None,
                 enabled: bool = True, file: IO[str] | None = None, interval: float = LOG_INTERVAL,
                 **kwargs: Any) -> tqdm:
    """A tqdm over ``iterable`` (or updated by hand up to ``total``) on ``file`` (default: stderr now): a bar on a
    terminal or in a notebook, else plain lines at most every ``interval`` seconds. ``enabled=False``: silent.

    ``kwargs`` go to tqdm (``initial``, ``unit``, ...). Use it as an iterator or call ``update``/``close``;
    ``set_postfix(..., refresh=False)`` and ``set_description_str(..., refresh=False)`` keep the rate limit."""
    stream = sys.stderr if file is None else file
    if not enabled:
        return tqdm(iterable, total=total, desc=desc, disable=True, **kwargs)
    if is_terminal(stream) or in_notebook():
        return tqdm(iterable, total=total, desc=desc, file=stream, disable=False, **kwargs)
    return tqdm(iterable, total=total, desc=desc or "progress", file=LogLines(stream), disable=False,  # type: ignore[arg-type]
                mininterval=interval, bar_format=LOG_FORMAT, **kwargs)
