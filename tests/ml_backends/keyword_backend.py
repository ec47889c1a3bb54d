"""A Label Studio ML backend on the `label-studio-ml` SDK: a word-count text classifier.

Run with the SDK's venv: `python keyword_backend.py PORT MODEL_DIR`. `fit` trains on the
tasks with annotations that come in the START_TRAINING webhook body (Labelloop's
ml-backend-notify step sends them); `predict` scores each task's text: its score is the
confidence of the chosen label, as Label Studio ML backends usually do.
"""

import math
import re
import sys
from collections import Counter, defaultdict

from label_studio_ml.api import init_app
from label_studio_ml.model import LabelStudioMLBase

WORD = re.compile(r"[a-z]+")


class KeywordModel(LabelStudioMLBase):
    # The SDK 1.0.9 trains on annotation events only; Labelloop asks with START_TRAINING.
    TRAIN_EVENTS = (*LabelStudioMLBase.TRAIN_EVENTS, "START_TRAINING")

    def _control(self):
        from_name, info = next(iter(self.parsed_label_config.items()))
        return from_name, info["to_name"][0], info["inputs"][0]["value"], info["labels"]

    def fit(self, tasks, workdir=None, **kwargs):
        data = kwargs.get("data") or {}
        counts = defaultdict(Counter)
        n = 0
        for task in data.get("tasks") or []:
            for ann in task.get("annotations") or []:
                for item in ann.get("result") or []:
                    for label in item.get("value", {}).get("choices", []):
                        counts[label].update(WORD.findall(str(task["data"].get("text", "")).lower()))
                        n += 1
        return {"counts": {k: dict(v) for k, v in counts.items()}, "n": n}

    def predict(self, tasks, **kwargs):
        from_name, to_name, value, labels = self._control()
        counts = (self.train_output or {}).get("counts") or {}
        out = []
        for task in tasks:
            words = WORD.findall(str(task["data"].get(value, "")).lower())
            logits = []
            for label in labels:
                c = counts.get(label, {})
                total = sum(c.values()) + len(c) + 1
                logits.append(sum(math.log((c.get(w, 0) + 1) / total) for w in words))
            top = max(logits)
            probs = [math.exp(v - top) for v in logits]
            probs = [p / sum(probs) for p in probs]
            best = max(range(len(labels)), key=probs.__getitem__)
            out.append({"result": [{"from_name": from_name, "to_name": to_name,
                                    "type": "choices", "value": {"choices": [labels[best]]},
                                    "score": probs[best]}],
                        "score": probs[best]})
        return out


if __name__ == "__main__":
    port, model_dir = int(sys.argv[1]), sys.argv[2]
    app = init_app(KeywordModel, model_dir=model_dir)
    app.run(host="127.0.0.1", port=port, debug=False, threaded=True)
