"""Generated sentences with entity spans: the spans demo's pool and its ground truth.

Sentences come from templates whose slots are filled from name lists; the spans are known
from where each slot landed. Some names are ambiguous on purpose (Jordan, Washington,
Paris, Chelsea, Lincoln are people, places or organisations; May and April are months and
people), some sentences are all lowercase, and a share has no entity at all.
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
          "Samir", "Tariq", "Ursula", "Victor", "Wen", "Yusuf", "Zoe", "Georgia", "May",
          "April", "Chelsea", "Sydney", "Florence", "Austin", "Dakota", "Lincoln", "Amir",
          "Beatriz", "Csaba", "Dmitri", "Eun", "Farah", "Gustav", "Ines", "Jamal", "Kofi",
          "Leila", "Mateo", "Noor", "Oskar", "Priya", "Rafael", "Sven", "Tomas", "Valentina"]
_LAST = ["Smith", "Okafor", "Nakamura", "Washington", "Garcia", "Novak", "Haddad", "Kim",
         "Larsen", "Moreau", "Petrov", "Silva", "Brown", "Chandra", "Jordan", "Weber",
         "Lincoln", "Ford", "Young", "King", "Bishop", "Mensah", "Ivanova", "Rossi", "Dubois",
         "Kowalski", "Tanaka", "Abebe", "Herrera", "Lindqvist", "Park", "Murphy"]
_ORG = ["Acme Corp", "Northwind", "the United Nations", "Globex", "Initech", "Red Cross",
        "City Council", "Stark Industries", "Blue River Bank", "the Ministry of Health",
        "Orbital Labs", "FC Porto", "Helios Energy", "the World Bank", "Umbrella Group",
        "Chelsea", "Ford", "Lincoln Financial", "Jordan Brands", "Apple", "Amazon",
        "General Mills", "Sydney Water", "Austin Energy", "Nordic Rail", "Greenfield School",
        "Mercy Hospital", "the Red Lions", "Pinecrest Media", "Quantum Dynamics"]
_LOC = ["Paris", "Lagos", "Tokyo", "Jordan", "Georgia", "Washington", "Lima", "Oslo",
        "Nairobi", "Quebec", "Mumbai", "Berlin", "New York", "South Africa", "Chile",
        "the Alps", "Cairo", "Hanoi", "Sydney", "Florence", "Austin", "Chelsea", "Lincoln",
        "Dakota", "Amazon", "Victoria", "Santiago", "Kingston", "Porto", "Reno", "Accra",
        "Bergen", "Valencia", "Adelaide", "the Sahara"]
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
    "{ORG} beat {ORG} 2-1 in {LOC}.",
    "Thanks to {PERSON} we finally got the permit!",
    "{PERSON} and {PERSON} signed the deal with {ORG}.",
    "Flights to {LOC} were cancelled until {DATE}.",
    "in {LOC} {PERSON} told reporters that {ORG} would not comment",
    "{ORG} says {LOC} is its biggest market.",
    "We drove through {LOC} and {LOC} before {DATE}.",
    "{PERSON}, who works for {ORG}, lives near {LOC}.",
    "The {LOC} office of {ORG} closes on {DATE}.",
    "Ask {PERSON} about it.",
    "Nobody expected the weather to change so fast.",
    "The new bridge is longer than the old one.",
    "Prices went up again this month.",
    "Most people stayed at home during the storm.",
    "May is a good time to plant tomatoes.",
    "The Amazon delivery came late again.",
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
    if r < 0.3:
        return f"{_MONTHS[rng.integers(12)]} {rng.integers(1, 29)}"
    if r < 0.5:
        return _DAYS[rng.integers(7)]
    if r < 0.65:
        return f"{rng.integers(1, 29)} {_MONTHS[rng.integers(12)]}"
    if r < 0.8:
        return f"{_MONTHS[rng.integers(12)]} {rng.integers(1990, 2027)}"
    return f"{rng.integers(1, 13):02d}/{rng.integers(1, 29):02d}/{rng.integers(2000, 2027)}"


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
    text += template[pos:]
    if rng.random() < 0.15:  # typed in a hurry: no capitals at all
        text = text.lower()
    return text, spans


def generate(n: int, seed: int = 0) -> tuple[list[str], list[list[dict]]]:
    """``n`` sentences and their spans, reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    texts, spans = [], []
    for _ in range(n):
        t, s = sentence(rng)
        texts.append(t)
        spans.append(s)
    return texts, spans
