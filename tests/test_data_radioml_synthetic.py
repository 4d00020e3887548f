"""RadioML readers (canonical split, SNR filter, bad layouts, lazy HDF5 through the real h5py) and the synthetic sets."""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import pytest
import torch

from components.contracts.data import radioml2016_table
from components.data import DataFormatError, RadioML2016, RadioML2018, SyntheticAudio, SyntheticIQ
from components.data.radioml import RADIOML2018_CLASSES, legacy_numpy_permutation
from components.registry import data_registry
from components.transforms import IQSpectrogram, LogMel

np = pytest.importorskip("numpy")


@pytest.mark.parametrize(("n", "seed"), [(10, 2016), (997, 2016), (5000, 7)])
def test_canonical_split_equals_numpys_seeded_choice(n: int, seed: int) -> None:
    np.random.seed(seed)
    expected = np.random.choice(range(n), size=n // 2, replace=False).tolist()
    assert legacy_numpy_permutation(n, seed)[: n // 2] == expected


def write_pickle(path: Path, table: object) -> Path:
    with open(path, "wb") as handle:
        pickle.dump(table, handle, protocol=2)
    return path


def test_radioml2016_orders_like_oshea_and_splits_in_halves(tmp_path: Path) -> None:
    table = radioml2016_table(("QPSK", "BPSK"), (10, -4), 3)
    ds = RadioML2016(root=str(write_pickle(tmp_path / "RML2016.10a_dict.pkl", table)))
    assert ds.class_names == ["BPSK", "QPSK"] and len(ds) == 12
    # frames in (sorted modulation, sorted SNR) order, as the canonical split indexes them
    torch.testing.assert_close(ds.signals[:3], torch.as_tensor(table[("BPSK", -4)]))
    np.random.seed(2016)
    train = set(np.random.choice(range(12), size=6, replace=False).tolist())
    assert {int(r.key[6:]) for r in ds.records if r.fold == 1} == train
    signal, label = ds[0]
    assert signal.shape == (2, 128) and signal.dtype == torch.float32 and label == ds.records[0].label
    high = RadioML2016(root=str(tmp_path), snr_min=0)  # a folder holding the pickle works too
    assert len(high) == 6 and set(high.snrs) == {10}
    stratified = RadioML2016(root=str(tmp_path), split="stratified")
    folds_per_group = {}
    for record, snr in zip(stratified.records, stratified.snrs):
        folds_per_group.setdefault((record.label, snr), []).append(record.fold)
    assert all(sorted(f) in ([1, 2, 2], [1, 1, 2]) for f in folds_per_group.values())


@pytest.mark.parametrize(
    ("payload", "problem"),
    [({"QPSK": 1}, "expected keys"), ([1, 2], "expected a dict"), (b"junk", None)],
)
def test_radioml2016_wrong_layout_names_the_file(tmp_path: Path, payload: object, problem: str | None) -> None:
    path = tmp_path / "x.pkl"
    if problem is None:
        path.write_bytes(payload)  # type: ignore[arg-type]
        problem = "not a RadioML 2016 pickle"
    else:
        write_pickle(path, payload)
    with pytest.raises(DataFormatError, match=problem) as error:
        RadioML2016(root=str(path))
    assert str(path) in str(error.value)


def test_radioml2016_refuses_pickles_that_would_run_code(tmp_path: Path) -> None:
    class Exploit:
        def __reduce__(self) -> tuple:
            return (print, ("pwned",))

    path = write_pickle(tmp_path / "evil.pkl", {("QPSK", 0): Exploit()})
    with pytest.raises(DataFormatError, match=r"refusing to load \w+\.print"):
        RadioML2016(root=str(path))


def test_radioml2018_without_h5py_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "GOLD_XYZ_OSC.0001_1024.hdf5"
    path.write_bytes(b"\x89HDF")
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(ModuleNotFoundError, match="pip install h5py"):
        RadioML2018(root=str(tmp_path))


def write_radioml2018(path: Path, x: object, y: object, z: object) -> Path:
    """An HDF5 file as DeepSig ships 2018.01A: datasets X, Y, Z at the root (real h5py)."""
    h5py = pytest.importorskip("h5py")  # in the dev extra: make venv installs it
    with h5py.File(path, "w") as out:
        out.create_dataset("X", data=x)
        out.create_dataset("Y", data=y)
        out.create_dataset("Z", data=z)
    return path


def radioml2018_arrays(per_group: int, snrs: tuple[int, ...]) -> tuple[object, object, object]:
    """The real layout: X float32 [n, 1024, 2], Y int64 one-hot [n, 24], Z int64 SNR [n, 1]."""
    classes = len(RADIOML2018_CLASSES)
    labels = np.repeat(np.arange(classes), len(snrs) * per_group)
    x = np.random.default_rng(0).standard_normal((labels.size, 1024, 2)).astype(np.float32)
    return x, np.eye(classes, dtype=np.int64)[labels], np.tile(np.repeat(snrs, per_group), classes)[:, None].astype(np.int64)


def test_radioml2018_reads_labels_snrs_and_frames_lazily(tmp_path: Path) -> None:
    per_group, snrs = 4, (-6, 12)
    x, y, z = radioml2018_arrays(per_group, snrs)
    path = write_radioml2018(tmp_path / "GOLD_XYZ_OSC.0001_1024.hdf5", x, y, z)
    ds = RadioML2018(root=str(tmp_path), snr_min=0)  # the folder holding the file works too
    assert ds.class_names[:4] == ["OOK", "4ASK", "8ASK", "BPSK"] and len(ds) == x.shape[0] // 2
    assert set(ds.snrs) == {12} and ds._file is None  # labels read, file closed again
    signal, label = ds[3]
    row = ds.rows[3]
    assert label == int(y[row].argmax()) and signal.shape == (2, 1024) and signal.dtype == torch.float32
    torch.testing.assert_close(signal, torch.from_numpy(x[row]).T)
    folds = [r.fold for r in ds.records if r.label == 0]
    assert sorted(folds) == [1, 1, 2, 2]  # a stratified half per (class, SNR)
    # DataLoader workers reopen the file in their own process (h5py handles do not pickle)
    loader = torch.utils.data.DataLoader(ds, batch_size=8, num_workers=2)
    frames = torch.cat([batch for batch, _ in loader])
    torch.testing.assert_close(frames, torch.stack([torch.from_numpy(x[r]).T for r in ds.rows]))
    ds.close()
    write_radioml2018(path, x, y[:, :10], z)
    with pytest.raises(DataFormatError, match=r"expected X \[n, L, 2\], Y \[n, 24\]"):
        RadioML2018(root=str(path))
    path.write_bytes(b"\x89HDF not really" * 64)
    with pytest.raises(DataFormatError, match="not a readable HDF5 file") as error:
        RadioML2018(root=str(path))
    assert str(path) in str(error.value)


def nearest_centroid_accuracy(features: torch.Tensor, labels: torch.Tensor, train: torch.Tensor) -> float:
    centroids = torch.stack([features[train & (labels == k)].mean(0) for k in labels.unique()])
    predicted = torch.cdist(features[~train], centroids).argmin(1)
    return (predicted == labels[~train]).float().mean().item()


def test_synthetic_audio_classes_are_easy_to_separate_across_folds() -> None:
    ds = SyntheticAudio(num_classes=8, num_items=80, num_samples=8000)
    assert all({r.label for r in ds.records if r.fold == f} == set(range(8)) for f in range(1, 6))
    waves = torch.stack([ds[i][0] for i in range(len(ds))])
    features = LogMel(target_frames=None).eval()(waves).mean(2).flatten(1)
    labels = torch.tensor(ds.labels())
    folds = torch.tensor([r.fold for r in ds.records])
    assert nearest_centroid_accuracy(features, labels, folds <= 3) == 1.0


def test_synthetic_iq_classes_are_easy_to_separate_and_noise_follows_snr() -> None:
    ds = SyntheticIQ(num_classes=6, num_items=60, snr_db=5.0)
    frames = torch.stack([ds[i][0] for i in range(len(ds))])
    features = IQSpectrogram().eval()(frames).mean(2).flatten(1)
    labels = torch.tensor(ds.labels())
    folds = torch.tensor([r.fold for r in ds.records])
    assert nearest_centroid_accuracy(features, labels, folds <= 3) >= 0.9
    clean = SyntheticIQ(num_classes=1, num_items=1, num_samples=4096, snr_db=100.0, class_offsets=False)[0][0]
    noisy = SyntheticIQ(num_classes=1, num_items=1, num_samples=4096, snr_db=0.0, class_offsets=False)[0][0]
    noise_power = (noisy - clean).square().sum(0).mean()
    assert 0.8 < noise_power < 1.25  # 0 dB: noise power equals the unit signal power


@pytest.mark.parametrize(
    ("name", "setting"),
    [
        ("synthetic_audio", {"num_classes": 0}),
        ("synthetic_audio", {"num_samples": 0}),
        ("synthetic_audio", {"sample_rate": 0}),
        ("synthetic_iq", {"num_folds": 0}),
        ("synthetic_iq", {"num_samples": -5}),
    ],
)
def test_synthetic_sizes_below_one_are_a_clear_error_naming_the_size(name: str, setting: dict[str, int]) -> None:
    (key, value), = setting.items()
    with pytest.raises(ValueError, match=f"^{name}: {key} must be >= 1, got {value}$"):
        data_registry.create(name, **setting)
