"""Similarity labeling webapp: questions, answers and tuning (labeling.similarity)."""

from labeling.similarity.webapp import create_backend

__all__ = ["create_backend"]
