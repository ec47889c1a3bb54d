"""Feature transformers that turn raw items (strings, image paths, sound paths) into numbers.

They are plain scikit-learn transformers with simple state (ints, floats, strings, numpy
arrays) so a fitted pipeline can be saved with skops and loaded from a trusted-types list.
File paths are resolved against ``root`` (a folder set by the caller before scoring), so a
saved model never bakes in an absolute path.
"""

from __future__ import annotations

import wave
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

from labelloop.errors import LabelloopError

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".tiff", ".webp"})
SOUND_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".mp3"})


class AsStrings(TransformerMixin, BaseEstimator):
    """Cast values to ``str`` (missing -> ""), keeping 1-D input 1-D and 2-D input 2-D."""

    def fit(self, X: Any, y: Any = None) -> AsStrings:
        return self

    def transform(self, X: Any) -> np.ndarray:
        if isinstance(X, pd.DataFrame | pd.Series):
            frame = X
        else:
            arr = np.asarray(X, dtype=object)
            frame = pd.Series(arr) if arr.ndim == 1 else pd.DataFrame(arr)
        values = frame.astype(object).where(frame.notna(), "").astype(str)
        return values.to_numpy(dtype=object)


class Clip(TransformerMixin, BaseEstimator):
    """Clip standardised features to [-limit, limit].

    Why: with the few labels of an active-learning start, a column that is nearly constant in
    the labeled rows gets a tiny standard deviation, and pool rows then score tens of sigmas
    out, which swamps the model's uncertainty; clipping keeps one column from dominating.
    """

    def __init__(self, limit: float = 3.0):
        self.limit = limit

    def fit(self, X: Any, y: Any = None) -> Clip:
        return self

    def __sklearn_is_fitted__(self) -> bool:
        return True  # stateless

    def transform(self, X: Any) -> np.ndarray:
        return np.clip(np.asarray(X, dtype=np.float64), -self.limit, self.limit)


def _paths(X: Any, column: str) -> list[str]:
    if isinstance(X, pd.DataFrame):
        if column not in X.columns:
            raise LabelloopError(
                f"expected a column {column!r} of file paths; the input has columns "
                f"{', '.join(map(str, X.columns))}"
            )
        values = X[column]
    else:
        values = pd.Series(np.asarray(X, dtype=object).reshape(-1))
    if values.isna().any():
        raise LabelloopError(f"column {column!r} has empty file paths; every row needs a file")
    return [str(v) for v in values]


def resolve_path(path: str, root: str | None) -> Path:
    """``path`` if absolute, else ``root / path``; a missing file raises LabelloopError."""
    p = Path(path)
    if not p.is_absolute() and root is not None:
        p = Path(root) / p
    if not p.is_file():
        where = (
            f" under folder {root!r}" if root is not None and not Path(path).is_absolute() else ""
        )
        raise LabelloopError(
            f"file {path!r} not found{where}; check that the folder holds the files the "
            "dataset's path column names"
        )
    return p


class _FileFeatures(TransformerMixin, BaseEstimator):
    """Shared plumbing: a ``column`` of paths relative to ``root`` -> one row of features each."""

    column: str
    root: str | None

    def fit(self, X: Any, y: Any = None) -> _FileFeatures:
        self.feature_names_in_ = np.array([self.column], dtype=object)
        self.n_features_in_ = 1
        self.n_features_out_ = self._n_out()
        return self

    def transform(self, X: Any) -> np.ndarray:
        paths = _paths(X, self.column)
        out = np.empty((len(paths), self._n_out()), dtype=np.float64)
        for i, path in enumerate(paths):
            out[i] = self._features(resolve_path(path, self.root))
        return out

    def _n_out(self) -> int:
        raise NotImplementedError

    def _features(self, path: Path) -> np.ndarray:
        raise NotImplementedError


class ImageFeatures(_FileFeatures):
    """Image path -> ``size`` x ``size`` gray pixels in [0, 1] + an RGB histogram of ``bins`` per channel."""

    def __init__(
        self, column: str = "path", root: str | None = None, size: int = 16, bins: int = 8
    ):
        self.column = column
        self.root = root
        self.size = size
        self.bins = bins

    def _n_out(self) -> int:
        return self.size * self.size + 3 * self.bins

    def _features(self, path: Path) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as img:
                img.load()
                rgb = img.convert("RGB")
        except (UnidentifiedImageError, OSError) as exc:
            raise LabelloopError(f"cannot read image {str(path)!r}: {exc}") from exc
        gray = rgb.convert("L").resize((self.size, self.size), Image.Resampling.BILINEAR)
        pixels = np.asarray(gray, dtype=np.float64).reshape(-1) / 255.0
        arr = np.asarray(rgb, dtype=np.uint8).reshape(-1, 3)
        # Bin index per channel value: 256 levels folded into `bins` equal bins.
        binned = (arr.astype(np.int64) * self.bins) >> 8
        hist = np.stack([np.bincount(binned[:, c], minlength=self.bins) for c in range(3)])
        hist = hist.reshape(-1) / max(arr.shape[0], 1)
        return np.concatenate([pixels, hist])


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Samples (float64 mono in [-1, 1]) and sample rate of a sound file.

    WAV PCM (8/16/24/32-bit) is read with the stdlib; float WAV through scipy; other
    formats (FLAC, OGG, MP3) need the optional ``soundfile`` package.
    """
    path = Path(path)
    if path.suffix.lower() == ".wav":
        try:
            return _read_wav_pcm(path)
        except (wave.Error, EOFError):
            pass  # not plain PCM (e.g. float32 WAV): let scipy try
        try:
            from scipy.io import wavfile

            rate, data = wavfile.read(path)
        except Exception as exc:  # scipy raises ValueError or its own warnings-as-errors
            raise LabelloopError(f"cannot read WAV file {str(path)!r}: {exc}") from exc
        return _to_mono_float(data), int(rate)
    try:
        import soundfile
    except ImportError:
        raise LabelloopError(
            f"cannot read {str(path)!r}: {path.suffix or 'this'} files need the 'soundfile' "
            "package (pip install soundfile); WAV files are read without it"
        ) from None
    try:
        data, rate = soundfile.read(str(path), dtype="float64", always_2d=True)
    except Exception as exc:  # soundfile raises its own LibsndfileError
        raise LabelloopError(f"cannot read sound file {str(path)!r}: {exc}") from exc
    return data.mean(axis=1), int(rate)


def _read_wav_pcm(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as w:
        channels, width, rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
        raw = w.readframes(w.getnframes())
    if width == 1:  # 8-bit WAV is unsigned
        data = (np.frombuffer(raw, dtype=np.uint8).astype(np.float64) - 128.0) / 128.0
    elif width == 2:
        data = np.frombuffer(raw, dtype="<i2").astype(np.float64) / 32768.0
    elif width == 3:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        ints = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        ints = np.where(ints >= 1 << 23, ints - (1 << 24), ints)
        data = ints.astype(np.float64) / float(1 << 23)
    elif width == 4:
        data = np.frombuffer(raw, dtype="<i4").astype(np.float64) / 2147483648.0
    else:
        raise wave.Error(f"unsupported sample width {width}")
    usable = data.shape[0] - data.shape[0] % channels
    return data[:usable].reshape(-1, channels).mean(axis=1), rate


def _to_mono_float(data: np.ndarray) -> np.ndarray:
    if data.dtype == np.uint8:
        data = (data.astype(np.float64) - 128.0) / 128.0
    elif np.issubdtype(data.dtype, np.integer):
        data = data.astype(np.float64) / float(np.iinfo(data.dtype).max + 1)
    else:
        data = data.astype(np.float64)
    return data.mean(axis=1) if data.ndim == 2 else data


class SoundFeatures(_FileFeatures):
    """Sound path -> mean and std over time of log energies in ``n_bands`` log-spaced bands.

    Bands are fixed in Hz (``fmin`` to ``fmax``), so files of different sample rates give
    comparable features; bands above a file's Nyquist frequency read as silence.
    """

    def __init__(
        self,
        column: str = "path",
        root: str | None = None,
        n_bands: int = 32,
        fmin: float = 50.0,
        fmax: float = 8000.0,
        frame_seconds: float = 0.032,
        max_seconds: float = 30.0,
    ):
        self.column = column
        self.root = root
        self.n_bands = n_bands
        self.fmin = fmin
        self.fmax = fmax
        self.frame_seconds = frame_seconds
        self.max_seconds = max_seconds

    def _n_out(self) -> int:
        return 2 * self.n_bands

    def _features(self, path: Path) -> np.ndarray:
        samples, rate = read_audio(path)
        return band_energies(
            samples, rate, self.n_bands, self.fmin, self.fmax, self.frame_seconds, self.max_seconds
        )


def band_energies(
    samples: np.ndarray,
    rate: int,
    n_bands: int = 32,
    fmin: float = 50.0,
    fmax: float = 8000.0,
    frame_seconds: float = 0.032,
    max_seconds: float = 30.0,
) -> np.ndarray:
    """Mean and std over frames of log band energies of a Hann-windowed short-time spectrum."""
    samples = np.asarray(samples, dtype=np.float64)[: int(max_seconds * rate)]
    n_fft = 1 << max(6, int(np.ceil(np.log2(max(frame_seconds * rate, 2)))))
    hop = n_fft // 2
    if samples.shape[0] < n_fft:
        samples = np.pad(samples, (0, n_fft - samples.shape[0]))
    frames = np.lib.stride_tricks.sliding_window_view(samples, n_fft)[::hop]
    power = np.abs(np.fft.rfft(frames * np.hanning(n_fft), axis=1)) ** 2
    freqs = np.fft.rfftfreq(n_fft, 1.0 / rate)
    edges = np.geomspace(fmin, fmax, n_bands + 1)
    band = np.searchsorted(edges, freqs, side="right") - 1
    inside = (band >= 0) & (band < n_bands)
    # Sum the power of each frequency bin into its band with one matrix product.
    assign = np.zeros((freqs.shape[0], n_bands))
    assign[np.flatnonzero(inside), band[inside]] = 1.0
    bands = power @ assign
    # A floor 60 dB under the mean frame energy: silent bands read the same whatever the
    # bit depth's quantisation noise, so 8- and 16-bit files of one sound match.
    floor = 1e-6 * float(power.sum(axis=1).mean()) + 1e-12
    energies = np.log(bands + floor)
    # Rounded so constant bands stay exactly constant: float noise of 1e-15 would become
    # unit-variance noise after standard scaling.
    return np.round(np.concatenate([energies.mean(axis=0), energies.std(axis=0)]), 6)


def folder_extension_kind(paths: Any) -> str | None:
    """ "image" or "sound" when most of ``paths`` have image / sound extensions, else None."""
    suffixes = [Path(str(p)).suffix.lower() for p in paths if isinstance(p, str | Path)]
    if not suffixes:
        return None
    images = sum(s in IMAGE_EXTENSIONS for s in suffixes)
    sounds = sum(s in SOUND_EXTENSIONS for s in suffixes)
    if images >= 0.5 * len(suffixes) and images >= sounds:
        return "image"
    if sounds >= 0.5 * len(suffixes):
        return "sound"
    return None
