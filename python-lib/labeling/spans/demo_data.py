"""Generated sentences with entity spans: the spans demo's pool and its ground truth.

Sentences come from templates whose slots are filled from name lists; the spans are known
from where each slot landed. Some names are ambiguous on purpose (Jordan, Washington,
Paris, Georgia are people and places), and a share of sentences has no entity at all.
"""

from __future__ import annotations

import re

import numpy as np

ENTITY_TYPES = {
    "PERSON": "a person's name",
    "ORG": "a company, team or institution",
    "LOC": "a city, country or region",
    "DATE": "a date or day",
}

_FIRST = ["Alice", "Bruno", "Chen", "Dalia", "Emeka", "Fatima", "Goran", "Hana", "Ivan",
          "Jordan", "Keiko", "Luis", "Maya", "Nikos", "Olga", "Paris", "Quentin", "Rosa",
          "Samir", "Tariq", "Ursula", "Victor", "Wen", "Yusuf", "Zoe", "Georgia"]
_LAST = ["Smith", "Okafor", "Nakamura", "Washington", "Garcia", "Novak", "Haddad", "Kim",
         "Larsen", "Moreau", "Petrov", "Silva", "Brown", "Chandra", "Jordan", "Weber"]
_ORG = ["Acme Corp", "Northwind", "the United Nations", "Globex", "Initech", "Red Cross",
        "City Council", "Stark Industries", "Blue River Bank", "the Ministry of Health",
        "Orbital Labs", "FC Porto", "Helios Energy", "the World Bank", "Umbrella Group"]
_LOC = ["Paris", "Lagos", "Tokyo", "Jordan", "Georgia", "Washington", "Lima", "Oslo",
        "Nairobi", "Quebec", "Mumbai", "Berlin", "New York", "South Africa", "Chile",
        "the Alps", "Cairo", "Hanoi"]
_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December"]
_DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]

_TEMPLATES = [
    "{PERSON} joined {ORG} in {LOC} on {DATE}.",
    "{PERSON} met {PERSON} in {LOC}.",
    "On {DATE}, {ORG} opened an office in {LOC}.",
    "{ORG} hired {PERSON} as its new director.",
    "{PERSON} flew from {LOC} to {LOC} on {DATE}.",
    "The report by {ORG} was published on {DATE}.",
    "{PERSON} said the talks in {LOC} went well.",
    "Shares of {ORG} rose after {PERSON} spoke on {DATE}.",
    "Heavy rain hit {LOC} on {DATE}.",
    "{PERSON} will visit {ORG} in {LOC} next week.",
    "According to {PERSON}, {ORG} plans to expand to {LOC}.",
    "{LOC} hosted the summit on {DATE}.",
    "{PERSON} left {LOC} for good.",
    "The meeting with {ORG} moved to {DATE}.",
    "Nobody expected the weather to change so fast.",
    "The new bridge is longer than the old one.",
    "Prices went up again this month.",
    "Most people stayed at home during the storm.",
]


def _fill(slot: str, rng: np.random.Generator) -> str:
    if slot == "PERSON":
        first = _FIRST[rng.integers(len(_FIRST))]
        return first if rng.random() < 0.3 else f"{first} {_LAST[rng.integers(len(_LAST))]}"
    if slot == "ORG":
        return _ORG[rng.integers(len(_ORG))]
    if slot == "LOC":
        return _LOC[rng.integers(len(_LOC))]
    r = rng.random()
    if r < 0.4:
        return f"{_MONTHS[rng.integers(12)]} {rng.integers(1, 29)}"
    if r < 0.7:
        return _DAYS[rng.integers(7)]
    return f"{_MONTHS[rng.integers(12)]} {rng.integers(1990, 2027)}"


def sentence(rng: np.random.Generator) -> tuple[str, list[dict]]:
    """One generated sentence and its spans (character offsets, end exclusive)."""
    template = _TEMPLATES[rng.integers(len(_TEMPLATES))]
    text, spans, pos = "", [], 0
    for m in re.finditer(r"\{(\w+)\}", template):
        text += template[pos:m.start()]
        value = _fill(m.group(1), rng)
        if value.startswith("the ") and not text:
            value = value[0].upper() + value[1:]
        # "the" of an organisation's name is not part of the entity
        skip = 4 if value.lower().startswith("the ") and m.group(1) == "ORG" else 0
        spans.append({"start": len(text) + skip, "end": len(text) + len(value),
                      "label": m.group(1)})
        text += value
        pos = m.end()
    return text + template[pos:], spans


def generate(n: int, seed: int = 0) -> tuple[list[str], list[list[dict]]]:
    """``n`` sentences and their spans, reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    texts, spans = [], []
    for _ in range(n):
        t, s = sentence(rng)
        texts.append(t)
        spans.append(s)
    return texts, spans
