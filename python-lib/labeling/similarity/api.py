"""The JSON routes of a similarity webapp (mounted under `/api/v1/webapps/<instance>/`).

| route | payload | answer |
|---|---|---|
| `GET questions` | `size` (1-20, default: examples per view) | `{"questions": [{"question_id", "query": {"id", "data"}, "candidates": [{"id", "data", "score"}]}], "model_version", "stats"}` |
| `POST answers` | `{"question_id", "positives": [ids], "negatives": [ids]}` or `{"question_id", "ignored": true}` | `{"pairs", "stats"}` |
| `POST model` | | `{"model", "version", "tuned_version"}`: a new saved-model version now |
| `GET neighbors` | `id`, `k` (1-100, default 10) | `{"id", "neighbors": [{"id", "score"}], "model_version"}` |
| `GET stats` | | `{"questions", "positives", "negatives", "ignored", "saved", "model_version", "indexed", "total", ...}` |
| `GET config` | | the webapp's settings as the page shows them |
| `GET media` | `id` (image / sound pools) | the item's file, with its content type, `ETag`, `Cache-Control` (the labeling webapps' route) |

Unknown question or item ids, candidates not in the question, positives that are also
negatives → 400; a question answered twice → 409. Nothing is written on a refused request.
"""

from __future__ import annotations

from typing import Any

from ..api import media_route
from .service import MAX_K, MAX_QUESTIONS, SimilarityService

_IDS = {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 4096},
        "maxItems": 100, "description": "candidate ids of the question"}
QUESTIONS_SCHEMA = {"type": "object", "properties": {
    "size": {"type": "integer", "minimum": 1, "maximum": MAX_QUESTIONS,
             "description": "how many questions (default: the webapp's examples per view)"}}}
ANSWER_SCHEMA = {
    "type": "object", "required": ["question_id"], "additionalProperties": False,
    "properties": {
        "question_id": {"type": "string", "minLength": 1, "maxLength": 64},
        "positives": _IDS, "negatives": _IDS,
        "ignored": {"type": "boolean", "description": "true: the whole question is ignored"},
    },
}
NEIGHBORS_SCHEMA = {"type": "object", "required": ["id"], "properties": {
    "id": {"type": "string", "minLength": 1, "maxLength": 4096, "description": "an item id"},
    "k": {"type": "integer", "minimum": 1, "maximum": MAX_K, "default": 10}}}
EMPTY = {"type": "object"}

_STATS = {"type": "object", "properties": {k: {"type": "integer"} for k in (
    "questions", "answered", "positives", "negatives", "ignored", "saved", "model_version",
    "indexed", "total")} | {"training": {"type": "boolean"}}}
_ITEM = {"type": "object", "required": ["id", "data"],
         "properties": {"id": {"type": "string"}, "data": {"type": "object"},
                        "score": {"type": "number"}}}
QUESTIONS_RESPONSE = {"type": "object", "required": ["questions", "model_version", "stats"],
                      "properties": {
                          "questions": {"type": "array", "items": {
                              "type": "object",
                              "required": ["question_id", "query", "candidates"],
                              "properties": {"question_id": {"type": "string"},
                                             "query": _ITEM,
                                             "candidates": {"type": "array", "items": _ITEM}}}},
                          "model_version": {"type": "integer"}, "stats": _STATS}}
ANSWER_RESPONSE = {"type": "object", "required": ["pairs", "stats"],
                   "properties": {"pairs": {"type": "integer"}, "stats": _STATS}}
MODEL_RESPONSE = {"type": "object", "required": ["model", "version"],
                  "properties": {"model": {"type": "string"}, "version": {"type": "integer"},
                                 "tuned_version": {"type": "integer"}}}
NEIGHBORS_RESPONSE = {"type": "object", "required": ["id", "neighbors", "model_version"],
                      "properties": {"id": {"type": "string"},
                                     "neighbors": {"type": "array", "items": {
                                         "type": "object", "properties": {
                                             "id": {"type": "string"},
                                             "score": {"type": "number"}}}},
                                     "model_version": {"type": "integer"}}}


def build_routes(service: SimilarityService) -> dict:
    """The DESIGN routes of a similarity webapp over `service`."""

    def questions(payload: dict, user: str) -> dict:
        return service.questions(user, payload.get("size"))

    def answers(payload: Any, user: str) -> dict:
        return service.answer(user, payload)

    def model(payload: Any, user: str) -> dict:
        return service.save_model(user)

    def neighbors(payload: dict, user: str) -> dict:
        return service.neighbors(payload.get("id"), payload.get("k", 10))

    def stats(payload: dict, user: str) -> dict:
        return service.stats(user)

    def config(payload: dict, user: str) -> dict:
        return service.config()

    routes = {
        ("GET", "questions"): {
            "handler": questions, "schema": QUESTIONS_SCHEMA, "response": QUESTIONS_RESPONSE,
            "summary": "New questions: a query and its top-K candidates under the current model"},
        ("POST", "answers"): {
            "handler": answers, "schema": ANSWER_SCHEMA, "response": ANSWER_RESPONSE,
            "summary": "Answer a question (positives / negatives, or ignored); 409 if answered",
            "description": "Appends one row per pair to the pairs dataset; the embedding is "
                           "tuned again in the background."},
        ("POST", "model"): {
            "handler": model, "schema": EMPTY, "response": MODEL_RESPONSE,
            "summary": "Save the current embedding as a new version of the saved model"},
        ("GET", "neighbors"): {
            "handler": neighbors, "schema": NEIGHBORS_SCHEMA, "response": NEIGHBORS_RESPONSE,
            "summary": "An item's nearest neighbours under the current model"},
        ("GET", "stats"): {
            "handler": stats, "schema": EMPTY, "response": _STATS,
            "summary": "Answered questions, pairs, saves, model version, indexing progress"},
        ("GET", "config"): {
            "handler": config, "schema": EMPTY,
            "summary": "The webapp's settings (view, advanced) as the page shows them"},
    }
    if service.dtype.from_folder:
        routes[("GET", "media")] = media_route(service.dtype)
    return routes
