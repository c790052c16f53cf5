"""Long work (inference over frames, training) as one job: iterate it for progress, cancel it any time."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Generator, Generic, Iterator, TypeVar

from .errors import Cancelled

T = TypeVar("T")


@dataclass(frozen=True)
class Progress:
    """How far a job is: `done` of `total` units (frames, steps or seconds)."""

    done: float
    total: float
    elapsed: float
    message: str = ""

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total else 0.0

    @property
    def seconds_left(self) -> float | None:
        """Linear estimate of the time remaining; None before the first unit is done."""
        if self.done <= 0 or not self.total:
            return None
        return max(0.0, self.elapsed * (self.total - self.done) / self.done)


def duration(seconds: float) -> str:
    """A time for people: "45 s", "3 min 05 s", "1 h 02 min"."""
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"


class Job(Generic[T]):
    """Wraps a generator `work(job)` that yields Progress and returns the result.

    Drive it with `run()` (blocking, optional callback), `for progress in job`, or `step()` from a
    GUI timer. `info` holds what the job decided up front (reported with its progress). `cancel()` makes
    the next `job.check()` inside the work raise `Cancelled`; work must
    clean up what it created before the exception leaves it.
    """

    def __init__(self, work: Callable[["Job[T]"], Generator[Progress, None, T]], description: str = "",
                 info: dict | None = None):
        self.description = description
        self.info = info or {}
        self.cancelled = False
        self.finished = False
        self.result: T | None = None
        self.last: Progress | None = None
        self._work = work
        self._iterator: Iterator[Progress] | None = None
        self._start = 0.0

    def __iter__(self) -> Iterator[Progress]:
        if self._iterator is None:
            self._iterator = self._drive()
        return self._iterator

    def _drive(self) -> Generator[Progress, None, None]:
        self._start = time.perf_counter()
        self.result = yield from self._work(self)
        self.finished = True

    def progress(self, done: float, total: float, message: str = "", since: float | None = None) -> Progress:
        """Make (and remember) a Progress timed from `since` (a perf_counter value; default: the job's start),
        so that a job made of phases can estimate the time left of the current one."""
        start = self._start if since is None else since
        self.last = Progress(done, total, time.perf_counter() - start, message)
        return self.last

    def check(self) -> None:
        """Raise Cancelled if the user asked to stop."""
        if self.cancelled:
            raise Cancelled(f"{self.description or 'job'} cancelled")

    def cancel(self) -> None:
        self.cancelled = True

    def step(self) -> bool:
        """Advance one unit; False once the job has finished (result is then set)."""
        try:
            next(iter(self))
            return True
        except StopIteration:
            return False

    def run(self, on_progress: Callable[[Progress], None] | None = None) -> T:
        """Run to the end and return the result."""
        for p in self:
            if on_progress is not None:
                on_progress(p)
        return self.result  # type: ignore[return-value]


def follow(job: Job, inner: Job, report: Callable[[Progress], Progress] = lambda p: p):
    """Run `inner` within `job` (`yield from follow(...)` in a job's work), yielding `report` of each of its
    progresses; cancelling `job` stops it at the next unit. Returns the inner job's result."""
    for progress in inner:
        yield report(progress)
        job.check()
    return inner.result
