"""A local Elo leaderboard from blind votes: replayed from the stored votes, in the order they were cast.
A model is its file (the store keys votes by sha256), shown by the newest label its votes carry.

Every model starts at 1000; K = 32. "A better" scores 1 for A, "tie" and "both bad" 0.5 each. The interval is
95 % by the delta method on the model's average score over its n votes: R +- 1.96 * 400 / (ln 10 * sqrt(n p
(1 - p))), with p kept within [0.05, 0.95] so that a few one-sided votes do not give an infinite interval.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

START, K = 1000.0, 32.0
OUTCOMES = {"a": 1.0, "b": 0.0, "tie": 0.5, "both_bad": 0.5}


@dataclass(frozen=True)
class Vote:
    model_a: str  # the model's key: its file's sha256 (votes from before files were told apart: its name)
    model_b: str
    outcome: str  # a key of OUTCOMES
    label_a: str = ""  # what to show for it ("" : the key)
    label_b: str = ""


@dataclass(frozen=True)
class Standing:
    model: str  # the key
    rating: float
    votes: int
    interval: float  # +- this, 95 %
    label: str = ""


def expected(rating_a: float, rating_b: float) -> float:
    return 1.0 / (1.0 + 10 ** ((rating_b - rating_a) / 400.0))


def leaderboard(votes: Iterable[Vote]) -> list[Standing]:
    ratings: dict[str, float] = {}
    scores: dict[str, list[float]] = {}
    labels: dict[str, str] = {}
    for vote in votes:
        labels[vote.model_a] = vote.label_a or labels.get(vote.model_a) or vote.model_a
        labels[vote.model_b] = vote.label_b or labels.get(vote.model_b) or vote.model_b
        a, b = ratings.setdefault(vote.model_a, START), ratings.setdefault(vote.model_b, START)
        score = OUTCOMES[vote.outcome]
        change = K * (score - expected(a, b))
        ratings[vote.model_a], ratings[vote.model_b] = a + change, b - change
        scores.setdefault(vote.model_a, []).append(score)
        scores.setdefault(vote.model_b, []).append(1.0 - score)
    standings = []
    for model, rating in ratings.items():
        n = len(scores[model])
        p = min(0.95, max(0.05, sum(scores[model]) / n))
        interval = 1.96 * 400.0 / (math.log(10) * math.sqrt(n * p * (1 - p)))
        standings.append(Standing(model, rating, n, interval, labels[model]))
    return sorted(standings, key=lambda s: -s.rating)
