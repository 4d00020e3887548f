"""RadioML modulation-recognition data sets: RML2016.10a/10b (pickle) and 2018.01A (HDF5).

RML2016: a Python-2 pickle of ``{(modulation, snr): float32 array [n, 2, 128]}``, read with
``encoding="latin1"`` through an unpickler that only admits numpy arrays (numpy is needed to
read it; the data never executes code). The canonical split is O'Shea's: modulations and SNRs
sorted, frames concatenated in that order, ``np.random.seed(2016)`` then
``np.random.choice(n, n // 2, replace=False)`` as the training half. It is reproduced here
bit-exactly without numpy (same MT19937 stream, same legacy shuffle).

RML2018.01A: ``GOLD_XYZ_OSC.0001_1024.hdf5`` with ``X [n, 1024, 2]``, one-hot ``Y [n, 24]``
and SNR ``Z [n, 1]``, read lazily through ``h5py``. The ``classes.txt`` published with it is
reported not to match ``Y``'s columns; the order in the paper's figure
(``RADIOML2018_CLASSES``) is the one the community has verified and is used here.

Folds: 1 = training half, 2 = test half.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import random
import warnings
from pathlib import Path
from typing import Any, Literal

import torch

from components.data.audio_io import DataFormatError
from components.data.base import Record, SignalDataset, filter_folds
from components.registry import data_registry

RADIOML2018_CLASSES = (
    "OOK", "4ASK", "8ASK", "BPSK", "QPSK", "8PSK", "16PSK", "32PSK", "16APSK", "32APSK", "64APSK", "128APSK",
    "16QAM", "32QAM", "64QAM", "128QAM", "256QAM", "AM-SSB-WC", "AM-SSB-SC", "AM-DSB-WC", "AM-DSB-SC", "FM", "GMSK",
    "OQPSK",
)  # fmt: skip
RML2016_FILES = ("RML2016.10a_dict.pkl", "RML2016.10b.dat", "2016.04C.multisnr.pkl")
RML2018_FILES = ("GOLD_XYZ_OSC.0001_1024.hdf5",)
NUMPY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
}


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays, nothing else (no code runs)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in NUMPY_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refusing to load {module}.{name}: a RadioML pickle holds only numpy arrays"
        )


def legacy_numpy_permutation(n: int, seed: int) -> list[int]:
    """``np.random.RandomState(seed).permutation(n)``, without numpy.

    Legacy seeding is MT19937's ``init_genrand(seed)``; Python's ``random`` is the same
    generator, so its state is set directly. The legacy shuffle swaps ``i`` with
    ``j = bounded(i)`` for ``i = n-1 .. 1``, drawing ``j`` by masked rejection sampling of
    32-bit outputs.
    """
    state = [seed & 0xFFFFFFFF]
    for i in range(1, 624):
        state.append((1812433253 * (state[-1] ^ (state[-1] >> 30)) + i) & 0xFFFFFFFF)
    rng = random.Random()
    rng.setstate((3, tuple(state) + (624,), None))
    values = list(range(n))
    for i in range(n - 1, 0, -1):
        mask = (1 << i.bit_length()) - 1
        j = rng.getrandbits(32) & mask
        while j > i:
            j = rng.getrandbits(32) & mask
        values[i], values[j] = values[j], values[i]
    return values


def find_radioml_file(root: str, names: tuple[str, ...], what: str, how: str) -> Path:
    path = Path(root)
    if path.is_dir():
        for name in names:
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(
            f"{what}: none of {', '.join(names)} found in {path}. {how}"
        )
    if not path.is_file():
        raise FileNotFoundError(f"{what}: {path} does not exist. {how}")
    return path


def snr_mask(
    snrs: torch.Tensor, snr_min: int | None, snr_max: int | None
) -> torch.Tensor:
    keep = torch.ones_like(snrs, dtype=torch.bool)
    if snr_min is not None:
        keep &= snrs >= snr_min
    if snr_max is not None:
        keep &= snrs <= snr_max
    return keep


def stratified_halves(
    labels: torch.Tensor, snrs: torch.Tensor, seed: int, train_fraction: float
) -> torch.Tensor:
    """Fold per item (1 train, 2 test): within each (class, SNR) group, a seeded random ``train_fraction``."""
    # one integer per (class, SNR): SNRs lie well within [-500, 500) dB
    groups = labels * 1000 + snrs + 500
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(groups.shape[0], generator=generator)
    sorted_groups, by_group = torch.sort(groups[order], stable=True)
    _, counts = torch.unique_consecutive(sorted_groups, return_counts=True)
    starts = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    rank = torch.arange(groups.shape[0]) - starts
    train = rank < torch.repeat_interleave(
        (counts.to(torch.float64) * train_fraction).round().long(), counts
    )
    folds = torch.empty_like(groups)
    folds[order[by_group]] = torch.where(train, 1, 2)
    return folds


class RadioMLBase(SignalDataset):
    signal_kind = "iq"

    def make_records(
        self, labels: torch.Tensor, snrs: torch.Tensor, folds: torch.Tensor, wanted: list[int] | None,
        snr_min: int | None, snr_max: int | None, source: str,
    ) -> None:  # fmt: skip
        keep = snr_mask(snrs, snr_min, snr_max)
        if not bool(keep.any()):
            raise ValueError(
                f"{source}: no frames with SNR in [{snr_min}, {snr_max}] dB; available: {sorted(set(snrs.tolist()))}"
            )
        rows = torch.nonzero(keep).flatten().tolist()
        label_list, snr_list, fold_list = labels.tolist(), snrs.tolist(), folds.tolist()
        records = [
            Record(
                f"index:{i}",
                label_list[i],
                self.class_names[label_list[i]],
                fold_list[i],
            )
            for i in rows
        ]
        records = filter_folds(records, wanted, source)
        self.records = records
        self.rows = [int(record.key[6:]) for record in records]
        self.snrs = [snr_list[i] for i in self.rows]


@data_registry.register("radioml2016", version="1.0")
class RadioML2016(RadioMLBase):
    """RML2016.10a/10b frames ``[2, 128]``; classes are the sorted modulation names.

    Args:
        root: Path of RML2016.10a_dict.pkl or RML2016.10b.dat from deepsig.ai (or the
            folder holding it); --data-dir overrides it.
        folds: Folds to load: 1 is the training half, 2 the test half; None loads both.
        snr_min: Drop frames below this SNR in dB (the data spans -20 to 18); None keeps
            the lowest.
        snr_max: Drop frames above this SNR in dB; None keeps the highest.
        split: `canonical` reproduces O'Shea's seeded train/test permutation;
            `stratified` draws the training share per (class, SNR).
        split_seed: Seed of the train/test draw (2016 gives the canonical split).
        train_fraction: Share of frames (0-1, exclusive) that goes to training fold 1;
            the rest is fold 2.
    """

    def __init__(
        self,
        root: str = "data/RML2016.10a_dict.pkl",
        folds: list[int] | None = None,
        snr_min: int | None = None,
        snr_max: int | None = None,
        split: Literal["canonical", "stratified"] = "canonical",
        split_seed: int = 2016,
        train_fraction: float = 0.5,
    ) -> None:
        super().__init__()
        if split not in ("canonical", "stratified"):
            raise ValueError(
                f"radioml2016: split must be 'canonical' or 'stratified', got {split!r}"
            )
        if not 0.0 < train_fraction < 1.0:
            raise ValueError(
                f"radioml2016: train_fraction must be in (0, 1), got {train_fraction}"
            )
        path = find_radioml_file(
            root, RML2016_FILES, "RadioML 2016",
            "Download RML2016.10a_dict.pkl (or RML2016.10b.dat) from https://www.deepsig.ai/datasets"
            " and point --data-dir (root) at it",
        )  # fmt: skip
        self.path = path
        table = self.read_pickle(path)
        mods = sorted({key[0] for key in table})
        snr_values = sorted({key[1] for key in table})
        self.class_names = mods
        arrays, labels, snrs = [], [], []
        for label, mod in enumerate(mods):
            for snr in snr_values:
                if (mod, snr) not in table:
                    continue
                block = table[(mod, snr)]
                arrays.append(block)
                labels += [label] * block.shape[0]
                snrs += [snr] * block.shape[0]
        self.signals = torch.cat(arrays).to(torch.float32).contiguous()
        label_tensor, snr_tensor = torch.tensor(labels), torch.tensor(snrs)
        n = self.signals.shape[0]
        if split == "canonical":
            # O'Shea's split draws round(n * train_fraction) indices (n * 0.5 in the original)
            train = legacy_numpy_permutation(n, split_seed)[: int(n * train_fraction)]
            fold_tensor = torch.full((n,), 2, dtype=torch.long)
            fold_tensor[torch.tensor(train, dtype=torch.long)] = 1
        else:
            fold_tensor = stratified_halves(
                label_tensor, snr_tensor, split_seed, train_fraction
            )
        self.make_records(
            label_tensor, snr_tensor, fold_tensor, folds, snr_min, snr_max, str(path)
        )

    @staticmethod
    def read_pickle(path: Path) -> dict[tuple[str, int], torch.Tensor]:
        if importlib.util.find_spec("numpy") is None:  # the pickle's arrays are numpy's
            raise ModuleNotFoundError(
                f"{path}: reading a RadioML 2016 pickle needs numpy: pip install numpy"
            )
        try:
            with open(path, "rb") as handle:
                table = NumpyOnlyUnpickler(handle, encoding="latin1").load()
        except (
            pickle.UnpicklingError,
            EOFError,
            ValueError,
            TypeError,
            AttributeError,
            IndexError,
        ) as error:
            raise DataFormatError(
                f"{path}: not a RadioML 2016 pickle ({error})"
            ) from None
        if not isinstance(table, dict) or not table:
            raise DataFormatError(
                f"{path}: expected a dict keyed by (modulation, snr), got {type(table).__name__}"
            )
        converted: dict[tuple[str, int], torch.Tensor] = {}
        length = None
        for key, value in table.items():
            if not (
                isinstance(key, tuple)
                and len(key) == 2
                and isinstance(key[0], (str, bytes))
            ):
                raise DataFormatError(
                    f"{path}: expected keys (modulation, snr), found {key!r}"
                )
            mod = key[0].decode("latin1") if isinstance(key[0], bytes) else key[0]
            try:
                array = torch.as_tensor(value)
                snr = int(key[1])
            except (TypeError, ValueError, RuntimeError):
                raise DataFormatError(
                    f"{path}: entry {key!r} is not a numeric array with an integer SNR"
                ) from None
            if (
                array.dim() != 3
                or array.shape[1] != 2
                or (length is not None and array.shape[2] != length)
            ):
                raise DataFormatError(
                    f"{path}: entry {key!r} has shape {tuple(array.shape)}, expected [n, 2, L] with one L"
                )
            length = array.shape[2]
            converted[(mod, snr)] = array
        return converted

    def load(self, index: int) -> torch.Tensor:
        return self.signals[self.rows[index]]


@data_registry.register("radioml2018", version="1.0")
class RadioML2018(RadioMLBase):
    """RadioML 2018.01A frames ``[2, 1024]``, read lazily from the HDF5 file through h5py.

    Labels and SNRs are read once (in chunks); frames are read on demand, with the file opened
    per process so data-loader workers do not share an h5py handle. The split is a seeded
    stratified half per (class, SNR) (there is no canonical one).

    Args:
        root: Path of GOLD_XYZ_OSC.0001_1024.hdf5 from deepsig.ai (or the folder holding
            it); needs h5py; --data-dir overrides it.
        folds: Folds to load: 1 is the training half, 2 the test half; None loads both.
        snr_min: Drop frames below this SNR in dB (the data spans -20 to 30); None keeps
            the lowest.
        snr_max: Drop frames above this SNR in dB; None keeps the highest.
        split_seed: Seed of the stratified train/test draw per (class, SNR); change it
            to draw another split.
        train_fraction: Share of frames (0-1, exclusive) per (class, SNR) that goes to
            training fold 1; the rest is fold 2.
    """

    def __init__(
        self,
        root: str = "data/GOLD_XYZ_OSC.0001_1024.hdf5",
        folds: list[int] | None = None,
        snr_min: int | None = None,
        snr_max: int | None = None,
        split_seed: int = 2018,
        train_fraction: float = 0.5,
    ) -> None:
        super().__init__()
        if not 0.0 < train_fraction < 1.0:
            raise ValueError(
                f"radioml2018: train_fraction must be in (0, 1), got {train_fraction}"
            )
        self.path = find_radioml_file(
            root, RML2018_FILES, "RadioML 2018.01A",
            "Download GOLD_XYZ_OSC.0001_1024.hdf5 (2018.01A) from https://www.deepsig.ai/datasets"
            " and point --data-dir (root) at it",
        )  # fmt: skip
        self.class_names = list(RADIOML2018_CLASSES)
        self._file: Any = None
        self._pid: int | None = None
        data = self.open()
        for name in ("X", "Y", "Z"):
            if name not in data:
                raise DataFormatError(
                    f"{self.path}: no dataset {name!r}; expected X [n, 1024, 2], Y [n, 24], Z [n, 1]"
                )
        x, y, z = data["X"], data["Y"], data["Z"]
        n = x.shape[0]
        if (
            len(x.shape) != 3
            or x.shape[2] != 2
            or tuple(y.shape) != (n, len(RADIOML2018_CLASSES))
            or z.shape[0] != n
        ):
            raise DataFormatError(
                f"{self.path}: layout X {tuple(x.shape)}, Y {tuple(y.shape)}, Z {tuple(z.shape)};"
                f" expected X [n, L, 2], Y [n, {len(RADIOML2018_CLASSES)}], Z [n, 1]"
            )
        labels, snrs = [], []
        chunk = 65536
        for start in range(0, n, chunk):
            labels.append(torch.as_tensor(y[start : start + chunk]).argmax(dim=1))
            snrs.append(torch.as_tensor(z[start : start + chunk]).reshape(-1).long())
        label_tensor, snr_tensor = torch.cat(labels), torch.cat(snrs)
        fold_tensor = stratified_halves(
            label_tensor, snr_tensor, split_seed, train_fraction
        )
        self.make_records(
            label_tensor,
            snr_tensor,
            fold_tensor,
            folds,
            snr_min,
            snr_max,
            str(self.path),
        )
        self.close()

    def open(self) -> Any:
        if self._file is None or self._pid != os.getpid():
            try:
                import h5py
            except ModuleNotFoundError:
                raise ModuleNotFoundError(
                    f"{self.path}: reading RadioML 2018 (HDF5) needs h5py: pip install h5py"
                ) from None
            try:
                self._file = h5py.File(self.path, "r")
            except OSError as error:
                raise DataFormatError(
                    f"{self.path}: not a readable HDF5 file ({error})"
                ) from None
            self._pid = os.getpid()
        return self._file

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            try:
                self._file.close()
            except Exception as error:  # closing must never mask the real outcome
                warnings.warn(f"{self.path}: closing failed: {error}", stacklevel=2)
        self._file = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_file"] = None  # h5py handles do not pickle; each worker reopens
        return state

    def load(self, index: int) -> torch.Tensor:
        frame = torch.as_tensor(self.open()["X"][self.rows[index]])  # [L, 2]
        return frame.to(torch.float32).T.contiguous()


__all__ = [
    "RADIOML2018_CLASSES",
    "RadioML2016",
    "RadioML2018",
    "legacy_numpy_permutation",
]
