"""Learning spans (named entities): tokens and BIO tags, the span tagger, its training,
the Query Sampler's span scoring, span file formats and the spans demo's data."""
