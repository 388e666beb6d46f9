"""Experiments: a candidate bundle serves a share of users beside the one at ``current``.

- **The plan** is ``experiment.json`` beside ``current`` in the bundles directory: the
  candidate's bundle id, its share, the salt, and why it stopped if it did. Every engine of
  every replica reads the same file (polled with ``current``), so each serves the same arms;
  ``POST /admin/experiment`` writes it (temp file, then rename).
- **Assignment** is a salted hash of the user id (or of the request's ``assignment_key``):
  the same on every front, replica and restart, and independent between experiments (each
  has its own salt). A request with neither goes to control.
- **The guardrail** (``Guardrail``) compares the arms' recent error rates and p99 latencies
  and stops the candidate when either passes control's by ``WALRUS_ENGINE__GUARDRAIL_FACTOR``.
"""

from __future__ import annotations

import hashlib
import math
import os
import secrets
from collections import deque
from pathlib import Path
from typing import Literal

import msgspec

from models.core.errors import WalrusError

Arm = Literal["control", "candidate"]
ARMS: tuple[Arm, ...] = ("control", "candidate")
PLAN_FILE = "experiment.json"
HASH_SPACE = 2**64


class ExperimentError(WalrusError):
    """An experiment the bundles directory cannot hold (no such bundle, not writable)."""


class ExperimentPlan(msgspec.Struct, frozen=True, omit_defaults=True):
    """``experiment.json``: what every engine serves beside ``current``."""

    candidate: str
    share: float
    salt: str
    started_at: str
    stopped: str | None = None  # why it stopped (the guardrail, an operator); None: running

    @property
    def running(self) -> bool:
        return self.stopped is None and self.share > 0


def new_salt() -> str:
    return secrets.token_hex(8)


def arm_of(key: str | None, plan: ExperimentPlan | None) -> Arm:
    """The arm of a user (or client key): a salted hash below ``share`` of the hash space is
    the candidate's. Stable for a key and plan; about ``share`` of keys over many."""
    if not key or plan is None or not plan.running:
        return "control"
    digest = hashlib.blake2b(f"{plan.salt}:{key}".encode(), digest_size=8).digest()
    return "candidate" if int.from_bytes(digest, "big") < plan.share * HASH_SPACE else "control"


_decode = msgspec.json.Decoder(ExperimentPlan).decode


def read_plan(bundles_dir: Path) -> ExperimentPlan | None:
    """The plan beside ``current``; None when there is none. ``ExperimentError`` when the
    file is not a plan (it is never half-written: see ``write_plan``)."""
    path = bundles_dir / PLAN_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        return _decode(raw)
    except msgspec.DecodeError as exc:
        raise ExperimentError(f"{path}: not an experiment plan ({exc})") from None


def write_plan(bundles_dir: Path, plan: ExperimentPlan | None) -> None:
    """Write the plan (None: remove it) with one atomic rename."""
    path = bundles_dir / PLAN_FILE
    try:
        if plan is None:
            path.unlink(missing_ok=True)
            return
        tmp = bundles_dir / f".{PLAN_FILE}.{os.getpid()}"
        tmp.write_bytes(msgspec.json.encode(plan))
        os.replace(tmp, path)
    except OSError as exc:
        raise ExperimentError(f"cannot write {path}: {exc.strerror}") from None


class Guardrail:
    """The arms' recent answers (``window`` each): the candidate is stopped when, after
    ``min_answers`` of its own, its error rate or p99 latency passes control's by
    ``factor`` (judged at each of its errors and every ``every`` of its answers), or when,
    after ``min_impressions`` each, its click-through rate falls below control's /
    ``factor`` (an error rate is floored at 1% first: one error in a clean control is no
    reason). Fed by the engine's event loop only, so it needs no lock."""

    def __init__(
        self,
        factor: float,
        min_answers: int,
        window: int = 1000,
        every: int = 20,
        min_impressions: int = 1000,
    ) -> None:
        self.factor, self.min_answers, self.every = factor, min_answers, every
        self.min_impressions = min_impressions
        self.views: dict[str, list[int]] = {arm: [0, 0] for arm in ARMS}  # impressions, clicks
        self.seen = 0  # the candidate's answers: judged every ``every`` (a sort of the window)
        self.recent: dict[str, deque[tuple[bool, float]]] = {
            arm: deque(maxlen=window) for arm in ARMS
        }

    def observe(self, arm: str, ok: bool, ms: float) -> str | None:
        """Record one answer; at every ``every``-th of the candidate's (and at each of its
        errors), the verdict."""
        self.recent[arm].append((ok, ms))
        if arm != "candidate":
            return None
        self.seen += 1
        return self.verdict() if not ok or self.seen % self.every == 0 else None

    def reset(self) -> None:
        for answers in self.recent.values():
            answers.clear()
        self.views = {arm: [0, 0] for arm in ARMS}

    def observe_events(self, arm: str, impressions: int, clicks: int) -> str | None:
        """Count an arm's attributed impressions and clicks; the verdict on the candidate's
        click-through rate once both arms have ``min_impressions``."""
        self.views[arm][0] += impressions
        self.views[arm][1] += clicks
        return self.ctr_verdict()

    def ctr_verdict(self) -> str | None:
        """The candidate's CTR below control's / ``factor``, and the 95% interval of the
        difference below 0: a candidate users stopped clicking (a broken head answers fast
        and without errors)."""
        (n0, c0), (n1, c1) = self.views["control"], self.views["candidate"]
        if min(n0, n1) < self.min_impressions:
            return None
        found = difference((c0, n0), (c1, n1))
        if found is None or found[2] >= 0 or c1 / n1 * self.factor >= c0 / n0:
            return None
        return (
            f"guardrail: the candidate's CTR {c1 / n1:.2%} fell below control's "
            f"{c0 / n0:.2%} / {self.factor:g} (difference {found[0]:+.2%}, 95% interval to "
            f"{found[2]:+.2%})"
        )

    def verdict(self) -> str | None:
        """Why the candidate must stop; None while it may go on."""
        candidate, control = self.recent["candidate"], self.recent["control"]
        if len(candidate) < self.min_answers or len(control) < self.min_answers:
            return None
        errors = {arm: _error_rate(self.recent[arm]) for arm in ARMS}
        if errors["candidate"] > self.factor * max(errors["control"], 0.01):
            return (
                f"guardrail: the candidate's error rate {errors['candidate']:.1%} passed "
                f"{self.factor:g} x control's {errors['control']:.1%}"
            )
        p99 = {arm: _p99(self.recent[arm]) for arm in ARMS}
        if p99["candidate"] > self.factor * p99["control"]:
            return (
                f"guardrail: the candidate's p99 {p99['candidate']:.1f} ms passed "
                f"{self.factor:g} x control's {p99['control']:.1f} ms"
            )
        return None


def _error_rate(answers: deque[tuple[bool, float]]) -> float:
    return sum(not ok for ok, _ in answers) / len(answers)


def _p99(answers: deque[tuple[bool, float]]) -> float:
    times = sorted(ms for ok, ms in answers if ok)
    return times[min(len(times) - 1, int(0.99 * len(times)))] if times else 0.0


Z95 = 1.959964  # the normal quantile of a two-sided 95% interval


def wilson(successes: int, trials: int) -> tuple[float, float, float] | None:
    """A proportion and its 95% Wilson score interval (sound at small counts and at 0 or
    1, where the normal approximation collapses); None without trials."""
    if trials <= 0:
        return None
    p = successes / trials
    z2 = Z95 * Z95
    centre = (p + z2 / (2 * trials)) / (1 + z2 / trials)
    half = Z95 * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials)) / (1 + z2 / trials)
    return p, max(0.0, centre - half), min(1.0, centre + half)


def difference(
    control: tuple[int, int], candidate: tuple[int, int]
) -> tuple[float, float, float] | None:
    """candidate's proportion - control's, with Newcombe's 95% interval (the hybrid score
    method, from each arm's Wilson interval); None when an arm has no trials."""
    a, b = wilson(*control), wilson(*candidate)
    if a is None or b is None:
        return None
    (p1, l1, u1), (p2, l2, u2) = a, b
    diff = p2 - p1
    return diff, diff - math.hypot(p2 - l2, u1 - p1), diff + math.hypot(u2 - p2, p1 - l1)
