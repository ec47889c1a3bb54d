"""Agreement between the annotators of one labeling webapp (`GET agreement`).

Over the items that at least two annotators answered (skips are not answers): their answers
are the rows of `lb_annotations` of the webapp with one owner per annotator, as
`labels_per_annotator` or `annotators_per_item` > 1 keep them. The statistics come from the
libraries, never by hand: Krippendorff's alpha (`krippendorff`, nominal), Fleiss' kappa
(statsmodels' `fleiss_kappa`, only when every item has the same number of answers) and
Cohen's kappa (scikit-learn's `cohen_kappa_score`). They are imported when first used:
commands and servers start without them.

`choice` answers are nominal values: a category, or with multi-label the chosen set as one
value (its categories in the webapp's order, shown joined by `+`; the empty set as
`(none)`), so two annotators agree on an item only when they chose exactly the same set.

Per annotator (`choice`): `n` items answered among those with two answers or more;
`agreement` the share of them where the annotator's answer equals the majority of the
*other* annotators' answers (items where the others tie are left out); `quality` Cohen's
kappa between the annotator's answers and that majority over the same items: 1 perfect, 0 what
chance gives, below 0 worse than chance; null where kappa is undefined (one category only).

`spans` answers are compared span by span (exact start, end and label): two annotators'
F1 over their shared items is 2 x matched spans / (spans of one + spans of the other), 1
when neither marked anything; an annotator's `agreement` and `quality` are the same F1
pooled over every other annotator. Alpha and kappa are null for spans (with the reason).

Per category: its answers, the pairs of answers (two annotators, one item) that include it,
how many of those differ (`confused`) and with what (`confused_with`). `confusion` is the
heat map of the page: `counts[i][j]` is the number of ordered pairs of two different
annotators' answers to one item where the first said `categories[i]` and the second
`categories[j]` (each pair of annotators counts in both orders: the matrix is symmetric, its
diagonal holds agreements twice, and its total is twice the pairs). For spans, a pair's spans
are matched by their offsets; a span the other annotator did not mark pairs with `(none)`.

Who sees what: `admin` sees every annotator; other roles see the overall figures, the
categories, their own per-annotator row and the pairs that include them (`scope` and `note`
say so). Without tokens everyone is admin (`labelloop.web.role_of`).
"""

from __future__ import annotations

import itertools
import json
import warnings
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from ..store import LABELED, annotations_table

NONE = "(none)"  # the empty multi-label set; a span the other annotator did not mark
SPAN_KINDS = ("spans",)


def read_answers(engine: Any) -> dict[str, dict[str, str]]:
    """`{item_id: {annotator: stored answer}}` of the items at least two annotators
    answered, from the webapp's rows of `lb_annotations`."""
    an = annotations_table
    two = (sa.select(an.c.item_id)
           .where(an.c.app == engine.app_id, an.c.status == LABELED, an.c.label.is_not(None))
           .group_by(an.c.item_id).having(sa.func.count(sa.distinct(an.c.annotator)) >= 2))
    query = (sa.select(an.c.item_id, an.c.annotator, an.c.label)
             .where(an.c.app == engine.app_id, an.c.status == LABELED,
                    an.c.label.is_not(None), an.c.item_id.in_(two))
             .order_by(an.c.item_id, an.c.label_id))
    out: dict[str, dict[str, str]] = defaultdict(dict)
    with engine.engine.connect() as conn:
        for item_id, annotator, label in conn.execute(query):
            out[item_id][annotator] = label
    return dict(out)


def nominal(stored: str, multi_label: bool) -> str:
    """A `choice` answer as one nominal value (multi-label: the chosen set)."""
    if not multi_label:
        return stored
    chosen = json.loads(stored)
    return "+".join(chosen) if chosen else NONE


def _num(value: Any) -> float | None:
    """A float, or None for NaN / infinity (undefined statistics; JSON has no NaN)."""
    if value is None:
        return None
    value = float(value)
    return value if value == value and abs(value) != float("inf") else None


def _kappa(a: Sequence[str], b: Sequence[str]) -> float | None:
    """Cohen's kappa of two label sequences (None where undefined: one category only)."""
    from sklearn.metrics import cohen_kappa_score

    if not a or len(set(a) | set(b)) < 2:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _num(cohen_kappa_score(list(a), list(b)))


def _categories(seen: Sequence[str], known: Sequence[str]) -> list[str]:
    """The webapp's categories, then any other value seen (combinations, `(none)`)."""
    extra = sorted(set(seen) - set(known))
    return [*known, *extra]


def _confusion(pairs: Sequence[tuple[str, str]], categories: list[str]) -> dict:
    """The symmetric pair-count matrix (see the module's docstring)."""
    index = {c: i for i, c in enumerate(categories)}
    counts = [[0] * len(categories) for _ in categories]
    for x, y in pairs:
        counts[index[x]][index[y]] += 1
        counts[index[y]][index[x]] += 1
    return {"categories": categories, "counts": counts}


def _per_category(pairs: Sequence[tuple[str, str]], answers: Counter,
                  categories: list[str]) -> list[dict]:
    involved: Counter = Counter()
    confused: dict[str, Counter] = defaultdict(Counter)
    for x, y in pairs:
        involved[x] += 1
        if x != y:
            involved[y] += 1
            confused[x][y] += 1
            confused[y][x] += 1
    out = []
    for c in categories:
        n_confused = sum(confused[c].values())
        out.append({
            "category": c, "answers": answers[c], "pairs": involved[c], "confused": n_confused,
            "confusion_rate": n_confused / involved[c] if involved[c] else None,
            "confused_with": [{"category": o, "n": n} for o, n in
                              sorted(confused[c].items(), key=lambda kv: (-kv[1], kv[0]))]})
    return [row for row in out if row["answers"] or row["pairs"]]


def choice_agreement(answers: Mapping[str, Mapping[str, str]],
                     categories: Sequence[str] = ()) -> dict:
    """The figures of nominal answers `{item: {annotator: value}}` (items with 2+ answers)."""
    import numpy as np

    items = sorted(i for i, a in answers.items() if len(a) >= 2)
    annotators = sorted({a for i in items for a in answers[i]})
    values = [v for i in items for v in answers[i].values()]
    cats = _categories(values, categories)
    out: dict[str, Any] = {"items": len(items), "annotators": len(annotators), "reasons": {}}

    # Krippendorff's alpha, nominal: annotators x items, NaN where one did not answer.
    code = {c: k for k, c in enumerate(cats)}
    if len(set(values)) < 2:
        out["krippendorff_alpha"] = None
        out["reasons"]["krippendorff_alpha"] = (
            "no item has two answers yet" if not items else
            "every answer is the same category: alpha is undefined without variation")
    else:
        import krippendorff

        data = np.full((len(annotators), len(items)), np.nan)
        row = {a: k for k, a in enumerate(annotators)}
        for j, i in enumerate(items):
            for a, v in answers[i].items():
                data[row[a], j] = code[v]
        out["krippendorff_alpha"] = _num(krippendorff.alpha(reliability_data=data,
                                                            level_of_measurement="nominal"))

    # Fleiss' kappa: items x categories counts; every item needs as many answers.
    sizes = sorted({len(answers[i]) for i in items})
    out["fleiss_kappa"] = None
    if not items:
        out["reasons"]["fleiss_kappa"] = "no item has two answers yet"
    elif len(sizes) > 1:
        out["reasons"]["fleiss_kappa"] = (f"items have between {sizes[0]} and {sizes[-1]} "
                                          "answers: Fleiss' kappa needs the same number on "
                                          "every item")
    else:
        from statsmodels.stats.inter_rater import fleiss_kappa

        table = np.zeros((len(items), len(cats)), dtype=int)
        for j, i in enumerate(items):
            for v in answers[i].values():
                table[j, code[v]] += 1
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out["fleiss_kappa"] = _num(fleiss_kappa(table, method="fleiss"))
        if out["fleiss_kappa"] is None:
            out["reasons"]["fleiss_kappa"] = ("every answer is the same category: kappa is "
                                              "undefined without variation")

    # Pairwise Cohen's kappa over the items both answered.
    answered = {a: {i for i in items if a in answers[i]} for a in annotators}
    pairwise = []
    for a, b in itertools.combinations(annotators, 2):
        shared = sorted(answered[a] & answered[b])
        if not shared:
            continue
        la, lb = [answers[i][a] for i in shared], [answers[i][b] for i in shared]
        pairwise.append({"a": a, "b": b, "n": len(shared), "cohen_kappa": _kappa(la, lb),
                         "agreement": sum(x == y for x, y in zip(la, lb, strict=True)) / len(shared)})
    out["pairwise"] = pairwise

    # Per annotator: against the majority of the others' answers.
    per = []
    for a in annotators:
        mine, theirs, n = [], [], 0
        for i in items:
            if a not in answers[i]:
                continue
            n += 1
            top = Counter(v for o, v in answers[i].items() if o != a).most_common(2)
            if len(top) > 1 and top[0][1] == top[1][1]:
                continue  # the others tie: no majority to compare with
            mine.append(answers[i][a])
            theirs.append(top[0][0])
        per.append({"annotator": a, "n": n, "compared": len(mine),
                    "agreement": (sum(x == y for x, y in zip(mine, theirs, strict=True)) / len(mine)
                                  if mine else None),
                    "quality": _kappa(mine, theirs)})
    out["per_annotator"] = per

    pairs = [(x, y) for i in items
             for x, y in itertools.combinations(list(answers[i].values()), 2)]
    out["per_category"] = _per_category(pairs, Counter(values), cats)
    out["confusion"] = _confusion(pairs, cats)
    return out


def _spans(stored: str) -> set[tuple[int, int, str]]:
    return {(int(s["start"]), int(s["end"]), str(s["label"])) for s in json.loads(stored)}


def _f1(matched: int, total: int) -> float:
    """2 x matched / (spans of both sides); 1 when neither side marked anything."""
    return 2 * matched / total if total else 1.0


def _span_pairs(x: set, y: set) -> list[tuple[str, str]]:
    """Label pairs of two annotators' spans matched by offsets (`(none)` if unmatched)."""
    bx = {(s, e): label for s, e, label in x}
    by = {(s, e): label for s, e, label in y}
    out = [(bx.get(k, NONE), by.get(k, NONE)) for k in sorted(set(bx) | set(by))]
    return [p for p in out if p != (NONE, NONE)]


def spans_agreement(answers: Mapping[str, Mapping[str, str]],
                    categories: Sequence[str] = ()) -> dict:
    """The figures of span answers `{item: {annotator: stored spans JSON}}`."""
    items = sorted(i for i, a in answers.items() if len(a) >= 2)
    annotators = sorted({a for i in items for a in answers[i]})
    spans = {i: {a: _spans(v) for a, v in answers[i].items()} for i in items}
    reason = ("span answers are compared by span-level F1 (exact start, end and label), not "
              "as one nominal value per item")
    out: dict[str, Any] = {"items": len(items), "annotators": len(annotators),
                           "krippendorff_alpha": None, "fleiss_kappa": None,
                           "reasons": {"krippendorff_alpha": reason, "fleiss_kappa": reason}}
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # annotator: matched, spans
    pairwise = []
    answered = {a: {i for i in items if a in spans[i]} for a in annotators}
    for a, b in itertools.combinations(annotators, 2):
        shared = sorted(answered[a] & answered[b])
        if not shared:
            continue
        matched = sum(len(spans[i][a] & spans[i][b]) for i in shared)
        total = sum(len(spans[i][a]) + len(spans[i][b]) for i in shared)
        for who in (a, b):
            totals[who][0] += matched
            totals[who][1] += total
        pairwise.append({"a": a, "b": b, "n": len(shared), "cohen_kappa": None,
                         "f1": _f1(matched, total)})
    out["pairwise"] = pairwise
    out["per_annotator"] = [
        {"annotator": a, "n": len(answered[a]), "compared": len(answered[a]),
         "agreement": _f1(*totals[a]) if a in totals else None,
         "quality": _f1(*totals[a]) if a in totals else None} for a in annotators]

    label_pairs = []
    answers_per_label: Counter = Counter()
    for i in items:
        for v in spans[i].values():
            answers_per_label.update(label for _s, _e, label in v)
        for x, y in itertools.combinations(list(spans[i].values()), 2):
            label_pairs.extend(_span_pairs(x, y))
    seen = [x for pair in label_pairs for x in pair]
    cats = _categories(seen, [*categories, NONE] if NONE in seen else list(categories))
    out["per_category"] = [row for row in _per_category(label_pairs, answers_per_label, cats)
                           if row["category"] != NONE]
    out["confusion"] = _confusion(label_pairs, cats)
    return out


def compute(engine: Any) -> dict:
    """Every annotator's figures for the webapp of `engine` (what an admin sees)."""
    answers = read_answers(engine)
    categories = list(engine.kind.types)
    if engine.cfg.kind in SPAN_KINDS:
        out = spans_agreement(answers, categories)
    else:
        multi = bool(engine.cfg.multi_label)
        out = choice_agreement({i: {a: nominal(v, multi) for a, v in by.items()}
                                for i, by in answers.items()}, categories)
    return {"kind": engine.cfg.kind, **out}


def visible_to(figures: dict, user: str, role: str) -> dict:
    """What `user` (with `role`) may see of `figures`: admins everything, others their own
    per-annotator row and the pairs that include them."""
    if role == "admin":
        return {**figures, "scope": "all",
                "note": "as an admin you see every annotator's figures"}
    return {**figures, "scope": "own",
            "per_annotator": [r for r in figures["per_annotator"] if r["annotator"] == user],
            "pairwise": [p for p in figures["pairwise"] if user in (p["a"], p["b"])],
            "note": f"as {'an' if role[0] in 'aeiou' else 'a'} {role} you see your own figures "
                    "and the pairs that include you; admins see every annotator's"}


def agreement(engine: Any, user: str) -> dict:
    """The `GET agreement` answer for `user`."""
    from labelloop.web import role_of

    role = role_of(engine.engine, user)
    return {**visible_to(compute(engine), user, role), "role": role}
