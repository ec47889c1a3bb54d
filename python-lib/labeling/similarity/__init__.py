"""Similarity labeling (Finetuner's Labeler): answer "which of these are related to this one?"
while an embedding is tuned on the answers in the background.

- `settings`: the webapp's params, checked;
- `embedding`: base embeddings per data type, the tuned projection, the saved pipeline;
- `tuning`: the projection learned from answered pairs (triplet objective);
- `index`: the pool embedded in background chunks;
- `store`: the tables (questions, tuned versions, saves);
- `service`: questions, answers, training, saving, neighbours, stats;
- `api`, `page`, `webapp`: the routes, the page and the webapp backend.
"""
