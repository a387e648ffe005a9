from __future__ import annotations

import io
import json
import pickle
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from conftest import write_cifar10_archive, write_idx, write_image_folder, write_mnist_like
from privquant.data import load_dataset
from privquant.data.archive import safe_extract
from privquant.data.cifar import load_cifar_pickle, load_image_folder
from privquant.data.idx import load_idx_dataset, read_idx
from privquant.data.tabular import TabularEncoder, load_adult, load_csv
from privquant.errors import DatasetError


@pytest.mark.parametrize("compress", [True, False])
def test_idx_round_trip(tmp_path: Path, compress: bool) -> None:
    arrays = write_mnist_like(tmp_path / "fm", compress=compress)
    ds = load_idx_dataset("fashion-mnist", tmp_path / "fm", verify=False)
    assert ds.x_train.shape == (40, 1, 28, 28) and ds.x_train.dtype == np.uint8
    np.testing.assert_array_equal(ds.x_train[:, 0], arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(ds.y_test, arrays["t10k-labels-idx1-ubyte"])
    assert ds.classes[0] == "T-shirt/top" and ds.num_classes == 10


def test_idx_checksum_is_enforced_for_builtin_names(tmp_path: Path) -> None:
    write_mnist_like(tmp_path / "fm")
    with pytest.raises(DatasetError, match="sha256 of contents"):
        load_idx_dataset("fashion-mnist", tmp_path / "fm", verify=True)


def test_idx_truncated_file_names_file_and_expectation(tmp_path: Path) -> None:
    arr = np.zeros((5, 28, 28), np.uint8)
    p = write_idx(tmp_path / "train-images-idx3-ubyte", arr, compress=False)
    p.write_bytes(p.read_bytes()[:-100])
    with pytest.raises(DatasetError) as e:
        read_idx(p)
    assert str(p) in str(e.value) and "truncated" in str(e.value)


def test_idx_bad_gzip_and_bad_magic(tmp_path: Path) -> None:
    gz = tmp_path / "x.gz"
    gz.write_bytes(b"not gzip at all")
    with pytest.raises(DatasetError, match="cannot read IDX"):
        read_idx(gz)
    raw = tmp_path / "raw"
    raw.write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(DatasetError, match="magic"):
        read_idx(raw)


def test_missing_builtin_says_how_to_get_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no ./data, no ../shared/datasets
    with pytest.raises(DatasetError) as e:
        load_dataset("cifar100")
    assert "cifar-100-python.tar.gz" in str(e.value) and "How to get it" in str(e.value)


def test_cifar10_pickle_archive_and_folder(tmp_path: Path) -> None:
    expected = write_cifar10_archive(tmp_path / "cifar-10-python.tar.gz")
    ds = load_cifar_pickle("cifar10", tmp_path / "cifar-10-python.tar.gz")
    assert ds.x_train.shape == (30, 3, 32, 32) and ds.classes[-1] == "truck"
    np.testing.assert_array_equal(ds.x_train, expected["x_train"])
    np.testing.assert_array_equal(ds.y_test, expected["y_test"])
    # The extracted folder layout loads to the same arrays.
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz") as tf:
        tf.extractall(tmp_path / "ex", filter="data")
    ds2 = load_cifar_pickle("cifar10", tmp_path / "ex")
    assert ds2.checksum == ds.checksum


def test_cifar10_found_by_name_and_cached(tmp_path: Path, isolated_cache: Path) -> None:
    write_cifar10_archive(tmp_path / "data" / "cifar-10-python.tar.gz")
    ds = load_dataset("cifar10")
    assert ds.extra["format"] == "python-pickle"
    cached = list((isolated_cache / "decoded").glob("cifar10-*.npz"))
    assert len(cached) == 1
    again = load_dataset("cifar10")
    assert again.checksum == ds.checksum and again.classes == ds.classes


def test_cifar_pickle_refuses_code(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    members = {"cifar-10-batches-py/batches.meta": pickle.dumps({b"label_names": Evil()})}
    for n in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        members[f"cifar-10-batches-py/{n}"] = pickle.dumps(
            {b"data": np.zeros((1, 3072), np.uint8), b"labels": [0]}
        )
    path = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    with pytest.raises(DatasetError, match="refusing to unpickle"):
        load_cifar_pickle("cifar10", path)


def test_cifar_corrupt_archive(tmp_path: Path) -> None:
    write_cifar10_archive(tmp_path / "c.tar.gz")
    data = (tmp_path / "c.tar.gz").read_bytes()
    (tmp_path / "cut.tar.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError) as e:
        load_cifar_pickle("cifar10", tmp_path / "cut.tar.gz")
    assert "cut.tar.gz" in str(e.value)


def test_image_folder_and_its_archive(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "imgs" / "mydata")
    ds = load_image_folder(tmp_path / "imgs" / "mydata")
    assert ds.x_train.shape == (6, 3, 8, 8) and ds.classes == ["cat", "dog"]
    assert ds.y_train.tolist() == [0, 0, 0, 1, 1, 1]
    with tarfile.open(tmp_path / "mydata.tar.gz", "w:gz") as tf:
        tf.add(root, arcname="mydata")
    from_archive = load_dataset(f"folder:{tmp_path / 'mydata.tar.gz'}")
    assert from_archive.checksum == ds.checksum


def test_image_folder_grayscale_and_size_mismatch(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "g", mode="L", size=(6, 6))
    assert load_image_folder(root).x_train.shape == (6, 1, 6, 6)
    from PIL import Image

    Image.fromarray(np.zeros((5, 7), np.uint8)).save(root / "test" / "dog" / "bad.png")
    with pytest.raises(DatasetError) as e:
        load_image_folder(root)
    assert "bad.png" in str(e.value) and "expected 6x6" in str(e.value)


def test_image_folder_corrupt_image(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "c")
    (root / "train" / "cat" / "0001.png").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="0001.png"):
        load_image_folder(root)


def test_safe_extract_rejects_escaping_paths(tmp_path: Path) -> None:
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tf:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 3
        tf.addfile(info, io.BytesIO(b"bad"))
    with pytest.raises(DatasetError, match="outside"):
        safe_extract(evil, tmp_path / "out")
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "out").exists()

    link = tmp_path / "link.tar"
    with tarfile.open(link, "w") as tf:
        info = tarfile.TarInfo("inner/passwd")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tf.addfile(info)
    with pytest.raises(DatasetError, match="link"):
        safe_extract(link, tmp_path / "out")

    z = tmp_path / "evil.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("../../zipped.txt", "bad")
    with pytest.raises(DatasetError, match="outside"):
        safe_extract(z, tmp_path / "out")
    assert not list(tmp_path.glob(".out.*")), "temporary extraction folder left behind"


ADULT_ROWS = [
    "39, State-gov, 77516, Bachelors, 13, Never-married, Adm-clerical, Not-in-family, White, Male, 2174, 0, 40, United-States, <=50K",
    "50, Self-emp-not-inc, 83311, Bachelors, 13, Married-civ-spouse, Exec-managerial, Husband, White, Male, 0, 0, 13, United-States, >50K",
    "38, ?, 215646, HS-grad, 9, Divorced, Handlers-cleaners, Not-in-family, White, Male, 0, 0, 40, ?, <=50K",
]


def test_adult_encoding_fitted_on_train_only(tmp_path: Path) -> None:
    d = tmp_path / "adult"
    d.mkdir()
    (d / "adult.data").write_text("\n".join(ADULT_ROWS) + "\n")
    test_row = "25, Never-worked, 100000, Doctorate, 16, Never-married, Armed-Forces, Own-child, Other, Female, 0, 0, 99, Peru, >50K."
    (d / "adult.test").write_text("|1x3 Cross validator\n" + test_row + "\n")
    ds = load_adult(d)
    assert ds.y_train.tolist() == [0, 1, 0] and ds.y_test.tolist() == [1]
    enc = TabularEncoder(**ds.extra["encoder"])
    assert "Never-worked" not in enc.categories["workclass"]  # test levels never enter the encoder
    age = enc.feature_names.index("age")
    assert abs(ds.x_train[:, age].mean()) < 1e-6  # standardized with train statistics
    (d / "adult.data").write_text(ADULT_ROWS[0] + ", extra\n")
    with pytest.raises(DatasetError, match=r"adult.data:1.*15 comma-separated"):
        load_adult(d)


def test_csv_with_label_column_and_seeded_split(tmp_path: Path) -> None:
    p = tmp_path / "t.csv"
    rows = ["a,color,label"] + [
        f"{i},{'red' if i % 2 else 'blue'},{'yes' if i % 3 else 'no'}" for i in range(20)
    ]
    p.write_text("\n".join(rows) + "\n")
    ds = load_csv(p, label="label", seed=3)
    assert ds.classes == ["no", "yes"] and len(ds.y_train) == 16 and len(ds.y_test) == 4
    assert ds.x_train.shape[1] == 3  # a numeric + one-hot(blue, red)
    assert load_csv(p, label="label", seed=3).checksum == ds.checksum
    with pytest.raises(DatasetError, match="no label column 'target'"):
        load_csv(p, label="target")
    p.write_text("a,label\n1,x\n2\n")
    with pytest.raises(DatasetError, match=r"t.csv:3.*expected 2 fields"):
        load_csv(p)


def test_npz_images_and_errors(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    p = tmp_path / "mine.npz"
    np.savez(p, x_train=rng.integers(0, 256, (10, 8, 8, 3), dtype=np.uint8), y_train=np.arange(10) % 3,
             x_test=rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8), y_test=np.arange(4) % 3)  # fmt: skip
    ds = load_dataset(f"npz:{p}")
    assert ds.kind == "image" and ds.x_train.shape == (10, 3, 8, 8) and ds.num_classes == 3
    np.savez(p, x_train=np.zeros((3, 4)), y_train=np.zeros(3, int))
    with pytest.raises(DatasetError, match=r"missing arrays \['x_test', 'y_test'\]"):
        load_dataset(f"npz:{p}")
    p.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DatasetError, match="mine.npz"):
        load_dataset(f"npz:{p}")


def test_digits_is_deterministic() -> None:
    a, b = load_dataset("digits"), load_dataset("digits")
    assert a.checksum == b.checksum and a.x_train.shape[1:] == (1, 8, 8) and a.x_train.max() == 255


def test_digits_read_directly_equal_sklearns_loader_and_need_no_sklearn_import() -> None:
    from sklearn.datasets import load_digits as sklearn_digits

    ds, ref = load_dataset("digits"), sklearn_digits()
    images = np.round(ref.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    perm = np.random.default_rng(0).permutation(len(ref.target))  # the seeded split, default seed
    train, test = np.sort(perm[len(ds.y_test) :]), np.sort(perm[: len(ds.y_test)])
    assert np.array_equal(ds.x_train, images[train]) and np.array_equal(ds.x_test, images[test])
    assert np.array_equal(ds.y_train, ref.target[train]) and np.array_equal(
        ds.y_test, ref.target[test]
    )
    code = ("import sys; from privquant.data import load_dataset; load_dataset('digits'); "
            "print('sklearn' in sys.modules)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_info_is_json_serializable() -> None:
    info = load_dataset("digits").info()
    assert json.loads(json.dumps(info))["num_classes"] == 10


def test_cifar100_archive_fine_labels(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    names = [f"class{i}".encode() for i in range(100)]
    members = {
        "cifar-100-python/meta": pickle.dumps({b"fine_label_names": names, b"coarse_label_names": []}, protocol=2),
        "cifar-100-python/train": pickle.dumps({b"data": rng.integers(0, 256, (7, 3072), dtype=np.uint8),
                                                b"fine_labels": list(range(7)), b"coarse_labels": [0] * 7}, protocol=2),
        "cifar-100-python/test": pickle.dumps({b"data": rng.integers(0, 256, (3, 3072), dtype=np.uint8),
                                               b"fine_labels": [99, 5, 0], b"coarse_labels": [0] * 3}, protocol=2),
    }  # fmt: skip
    path = tmp_path / "data" / "cifar-100-python.tar.gz"
    path.parent.mkdir(parents=True)
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    ds = load_dataset("cifar100")
    assert (
        ds.num_classes == 100
        and ds.x_train.shape == (7, 3, 32, 32)
        and ds.y_test.tolist() == [99, 5, 0]
    )


def test_download_verifies_checksum_and_leaves_nothing_on_mismatch(tmp_path: Path) -> None:
    import hashlib

    from privquant.data.archive import download

    src = tmp_path / "remote.bin"
    src.write_bytes(b"payload")
    good = hashlib.md5(b"payload").hexdigest()
    dest = download(src.as_uri(), tmp_path / "dl" / "file.bin", md5=good)
    assert dest.read_bytes() == b"payload"
    with pytest.raises(DatasetError, match="expected 0+"):
        download(src.as_uri(), tmp_path / "dl" / "bad.bin", md5="0" * 32)
    assert sorted(p.name for p in (tmp_path / "dl").iterdir()) == ["file.bin"]


def test_a_damaged_decoded_cache_is_rebuilt(tmp_path: Path, isolated_cache: Path) -> None:
    write_cifar10_archive(tmp_path / "data" / "cifar-10-python.tar.gz")
    ds = load_dataset("cifar10")
    (cached,) = (isolated_cache / "decoded").glob("cifar10-*.npz")
    good = cached.read_bytes()
    for damage in (
        good[: len(good) // 2],
        good[:-200] + bytes(200),
    ):  # truncated; same size, zeroed
        cached.write_bytes(damage)
        again = load_dataset("cifar10")  # no BadZipFile, no silently different arrays
        assert again.checksum == ds.checksum
        assert cached.read_bytes() == good  # and the entry was rewritten whole


def _npz(path, **arrays):  # noqa: ANN001, ANN003, ANN202
    rng = np.random.default_rng(0)
    base = {"x_train": rng.random((40, 8, 8)).astype(np.float32), "y_train": np.arange(40) % 4,
            "x_test": rng.random((10, 8, 8)).astype(np.float32), "y_test": np.arange(10) % 4}  # fmt: skip
    np.savez(path, **{**base, **arrays})
    return path


def test_user_arrays_are_validated_where_they_load(tmp_path) -> None:  # noqa: ANN001
    from privquant.data.user import load_npz
    from privquant.errors import DatasetError

    rng = np.random.default_rng(1)
    x = rng.random((40, 8, 8)).astype(np.float32)
    x[0, 0, 0] = 1.0000001  # a rounding error above 1: still a [0, 1] image, scaled, not truncated
    ds = load_npz(_npz(tmp_path / "a.npz", x_train=x))
    assert ds.x_train.dtype == np.uint8 and ds.x_train.max() == 255 and ds.x_train.mean() > 100
    x[1, 2, 3] = np.nan
    with pytest.raises(DatasetError, match=r"x_train: 1 images hold NaN or infinite pixels"):
        load_npz(_npz(tmp_path / "b.npz", x_train=x))
    with pytest.raises(DatasetError, match=r"image values span 0\.5\.\.300"):
        load_npz(_npz(tmp_path / "c.npz", x_train=np.full((40, 8, 8), 0.5) + np.eye(8) * 299.5))
    feats = rng.normal(size=(40, 5)).astype(np.float32)
    feats[3, 1] = np.inf
    with pytest.raises(
        DatasetError, match=r"x_train: 1 rows hold NaN or infinite values \(first: row 3\)"
    ):
        load_npz(_npz(tmp_path / "d.npz", x_train=feats, x_test=np.zeros((10, 5), np.float32)))
    with pytest.raises(DatasetError, match="x_train has 40 rows but y_train has 39"):
        load_npz(_npz(tmp_path / "e.npz", y_train=np.arange(39) % 4))
    with pytest.raises(DatasetError, match="the test part is empty"):
        load_npz(
            _npz(
                tmp_path / "f.npz",
                x_test=np.zeros((0, 8, 8), np.float32),
                y_test=np.zeros(0, np.int64),
            )
        )


def test_csv_typos_and_infinities_name_the_column(tmp_path) -> None:  # noqa: ANN001
    from privquant.data.tabular import load_csv
    from privquant.errors import DatasetError

    rng = np.random.default_rng(0)
    rows = [f"{v:.3f},{'ab'[i % 2]},{i % 2}" for i, v in enumerate(rng.normal(size=200))]
    good = tmp_path / "good.csv"
    good.write_text("num,cat,label\n" + "\n".join(rows) + "\n")
    assert load_csv(good).x_train.shape[1] == 3  # num + cat=a + cat=b
    typo = rows.copy()
    typo[5] = "0.3O1,a,1"
    (tmp_path / "typo.csv").write_text("num,cat,label\n" + "\n".join(typo) + "\n")
    with pytest.raises(
        DatasetError, match=r"column 'num': 1 of \d+ values are not numbers \(e.g. '0.3O1'\)"
    ):
        load_csv(tmp_path / "typo.csv", test_fraction=0.01)
    inf = rows.copy()
    inf[7] = "inf,a,1"
    (tmp_path / "inf.csv").write_text("num,cat,label\n" + "\n".join(inf) + "\n")
    with pytest.raises(DatasetError, match=r"column 'num': infinite value 'inf'"):
        load_csv(tmp_path / "inf.csv", test_fraction=0.01)


def test_image_folder_caches_see_added_images_and_other_archives(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    from PIL import Image

    from privquant.data.registry import _source_signature

    root = tmp_path / "imgs"
    for split in ("train", "test"):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(root / split / c / "0.png")
    before = _source_signature(root)
    Image.fromarray(np.ones((4, 4, 3), np.uint8)).save(root / "train" / "a" / "1.png")
    assert _source_signature(root) != before
