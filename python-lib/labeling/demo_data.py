"""The pools of `labelloop demo`: each demo's items generated, with their true labels.

Digits as PNG files (image, similarity), iris measurements (tabular), news-like sentences in
four topics (text), WAV tones (sound) and sentences with entities to mark (spans, from
`labeling.spans.demo_data`). The same pool in every run (the generators are seeded).
"""

from __future__ import annotations

import io
import wave
from dataclasses import dataclass

import numpy as np
import pandas as pd

DATA_TYPES = ("image", "tabular", "text", "sound")
SIMILARITY = "similarity"  # the similarity labeler's demo (digits, no classifier loop)
SPANS = "spans"  # entity spans in generated sentences, with a span tagger in the loop


@dataclass
class DemoData:
    """A generated pool: what goes into the project and the truth kept beside it."""

    data_type: str
    webapp: str
    categories: dict[str, str | None]
    truth: pd.DataFrame  # columns: id (the webapp's item id), label
    files: dict[str, bytes] | None = None  # folder pool: relative path -> content
    rows: pd.DataFrame | None = None  # dataset pool
    id_column: str | None = None
    text_column: str | None = None


def digits_data(scale: int = 8) -> DemoData:
    """load_digits as grayscale PNGs, 8x8 scaled up ``scale`` times (dark ink on white)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    files, ids = {}, []
    for i, image in enumerate(digits.images):
        # load_digits holds ink levels 0..16; inverted so digits look like pen on paper.
        pixels = (255 - np.round(image * (255 / 16))).astype(np.uint8)
        img = Image.fromarray(pixels, mode="L").resize((8 * scale, 8 * scale),
                                                       Image.Resampling.NEAREST)
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        path = f"digit-{i:04d}.png"  # no label in the name: the annotator must look
        files[path] = buf.getvalue()
        ids.append(path)
    categories = {str(d): f"the digit {d}" for d in range(10)}
    truth = pd.DataFrame({"id": ids, "label": [str(t) for t in digits.target]})
    return DemoData("image", "label-digits", categories, truth, files=files)


def iris_data() -> DemoData:
    """The iris measurements as a dataset; three species."""
    from sklearn.datasets import load_iris

    iris = load_iris(as_frame=True)
    rows = iris.data.rename(columns=lambda c: c.replace(" (cm)", "").replace(" ", "_"))
    # `data_id` names the item like the metadata column does; training never uses it.
    rows.insert(0, "data_id", [f"iris-{i:03d}" for i in range(len(rows))])
    names = [str(n) for n in iris.target_names]
    categories = {"setosa": "Iris setosa", "versicolor": "Iris versicolor",
                  "virginica": "Iris virginica"}
    truth = pd.DataFrame({"id": rows["data_id"], "label": [names[t] for t in iris.target]})
    return DemoData("tabular", "label-iris", categories, truth, rows=rows, id_column="data_id")


_TOPICS: dict[str, dict[str, list[str]]] = {
    "sports": {
        "who": ["The home team", "Our striker", "The veteran goalkeeper", "The young sprinter",
                "The coach", "The captain"],
        "did": ["scored twice in the second half", "won the final after extra time",
                "broke the national record", "was injured during training",
                "signed a new contract", "missed a penalty in the last minute"],
        "where": ["at the stadium", "in the league match", "at the championship",
                  "during the derby", "in front of a full crowd"],
    },
    "weather": {
        "who": ["Forecasters", "The national weather service", "Meteorologists",
                "Residents of the coast", "Farmers in the valley"],
        "did": ["expect heavy rain and strong wind", "warned of a heat wave",
                "reported the first snow of the season", "saw temperatures drop below zero",
                "are preparing for a storm", "measured record rainfall"],
        "where": ["this weekend", "across the north", "along the coast", "overnight",
                  "in the mountains"],
    },
    "cooking": {
        "who": ["The chef", "My grandmother", "This recipe", "The bakery downtown",
                "Our cooking class"],
        "did": ["roasts the vegetables with garlic and thyme", "bakes bread with a crisp crust",
                "simmers the tomato sauce for hours", "adds a pinch of salt to the caramel",
                "serves the soup with fresh herbs", "whisks eggs and butter into a sauce"],
        "where": ["for dinner", "in a cast iron pan", "every Sunday", "in the oven",
                  "with seasonal produce"],
    },
    "technology": {
        "who": ["The startup", "Engineers", "The new phone", "The software update",
                "Researchers at the lab"],
        "did": ["released a faster processor", "fixed a security flaw in the browser",
                "trained a larger language model", "doubled the battery life",
                "open sourced their database", "shipped a new version of the app"],
        "where": ["this quarter", "for developers", "at the conference", "in the cloud",
                  "on every laptop"],
    },
}
# Words every topic may use: they make some texts harder to tell apart, as real ones are.
_FILLERS = ["Yesterday,", "Reportedly,", "Once again,", "Surprisingly,", "As expected,", ""]


def texts_data(n: int = 400, seed: int = 0) -> DemoData:
    """Short generated news-like sentences in four topics."""
    rng = np.random.default_rng(seed)
    topics = list(_TOPICS)
    texts, labels = [], []
    for i in range(n):
        topic = topics[i % len(topics)]
        parts = _TOPICS[topic]
        pick = {k: parts[k][rng.integers(len(parts[k]))] for k in parts}
        filler = _FILLERS[rng.integers(len(_FILLERS))]
        sentence = f"{pick['who']} {pick['did']} {pick['where']}."
        texts.append(f"{filler} {sentence[0].lower()}{sentence[1:]}" if filler else sentence)
        labels.append(topic)
    order = rng.permutation(n)
    rows = pd.DataFrame({"data_id": [f"text-{i:04d}" for i in range(n)],
                         "text": [texts[j] for j in order]})
    truth = pd.DataFrame({"id": rows["data_id"], "label": [labels[j] for j in order]})
    categories = {t: f"a text about {t}" for t in topics}
    return DemoData("text", "label-texts", categories, truth, rows=rows, id_column="data_id",
                    text_column="text")


_TONES = {"low": (180.0, 320.0), "middle": (500.0, 800.0), "high": (1200.0, 2000.0)}


def tone_wav(freq: float, seconds: float, rate: int, rng: np.random.Generator) -> bytes:
    """A 16-bit mono WAV of a tone with one harmonic, a fade in/out and a little noise."""
    t = np.arange(int(seconds * rate)) / rate
    signal = np.sin(2 * np.pi * freq * t) + 0.3 * np.sin(2 * np.pi * 2 * freq * t)
    fade = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.05)
    signal = signal * fade + 0.05 * rng.standard_normal(len(t))
    pcm = np.clip(signal / 1.5 * 32767, -32768, 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


def sounds_data(n: int = 150, seed: int = 0, rate: int = 8000) -> DemoData:
    """Generated WAV tones: low, middle or high pitched."""
    rng = np.random.default_rng(seed)
    names = list(_TONES)
    files, ids, labels = {}, [], []
    for i in range(n):
        label = names[rng.integers(len(names))]
        lo, hi = _TONES[label]
        path = f"tone-{i:04d}.wav"
        files[path] = tone_wav(float(rng.uniform(lo, hi)), float(rng.uniform(0.6, 1.2)), rate,
                               rng)
        ids.append(path)
        labels.append(label)
    categories = {k: f"a {k} pitched tone ({int(lo)}-{int(hi)} Hz)"
                  for k, (lo, hi) in _TONES.items()}
    truth = pd.DataFrame({"id": ids, "label": labels})
    return DemoData("sound", "label-tones", categories, truth, files=files)


def spans_data(n: int = 400, seed: int = 0) -> DemoData:
    """Generated sentences with people, organisations, places and dates to mark."""
    from .spans.demo_data import ENTITY_TYPES, generate
    from .spans.tokens import dumps_spans

    texts, spans = generate(n, seed)
    rows = pd.DataFrame({"data_id": [f"sentence-{i:04d}" for i in range(n)], "text": texts})
    truth = pd.DataFrame({"id": rows["data_id"], "label": [dumps_spans(s) for s in spans]})
    return DemoData("text", "label-entities", dict(ENTITY_TYPES), truth, rows=rows,
                    id_column="data_id", text_column="text")


GENERATORS = {"image": digits_data, "tabular": iris_data, "text": texts_data,
              "sound": sounds_data, SIMILARITY: digits_data, SPANS: spans_data}
