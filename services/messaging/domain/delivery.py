"""Retries and fallback: when a failed attempt is tried again, and when a channel is given up.

A transient failure (the provider answered 429 or 5xx, or could not be reached) is retried on the
same channel after an exponential back-off with jitter, within a budget of attempts per channel.
A permanent failure (an invalid number, an unregistered device, a bounce, a rejection) or an
exhausted budget moves the notification to its next allowed channel at once; with none left it
is FAILED. The jitter spreads the retries of a burst that failed together, so a provider that
just recovered is not hit by all of them in the same second.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts_per_channel: int = 4
    base_delay: timedelta = timedelta(seconds=2)
    max_delay: timedelta = timedelta(minutes=5)

    def delay(self, tries: int, rng: random.Random, retry_after: timedelta | None = None) -> timedelta:
        """Back-off before try ``tries + 1``: exponential, capped, "equal jitter" (half fixed,
        half random); never shorter than what the provider asked for (Retry-After)."""
        ceiling = min(self.max_delay, self.base_delay * (2 ** max(tries - 1, 0)))
        half = ceiling / 2
        wait = half + half * rng.random()
        return max(wait, retry_after) if retry_after is not None else timedelta(seconds=wait.total_seconds())


@dataclass(frozen=True, slots=True)
class Retry:
    at: datetime


@dataclass(frozen=True, slots=True)
class NextChannel:
    channel: int


@dataclass(frozen=True, slots=True)
class GiveUp:
    pass


Step = Retry | NextChannel | GiveUp


def after_failure(
    *,
    transient: bool,
    tries_on_channel: int,
    remaining_channels: tuple[int, ...],
    policy: RetryPolicy,
    now: datetime,
    rng: random.Random,
    retry_after: timedelta | None = None,
) -> Step:
    """What follows a failed attempt. ``remaining_channels`` excludes the one that failed."""
    if transient and tries_on_channel < policy.attempts_per_channel:
        return Retry(now + policy.delay(tries_on_channel, rng, retry_after))
    if remaining_channels:
        return NextChannel(remaining_channels[0])
    return GiveUp()
