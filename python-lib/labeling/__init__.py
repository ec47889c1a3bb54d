"""The ML-assisted labeling plugin's library: strategies, training, data types, engine, UI."""
