"""The shard data sets' messages name the data set they come from (its registered name), not
``audio_shards`` for all three: bad members (the error, and the warning with
``skip_bad_files``), conflicting class names, and shard patterns that match nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from components.data.feature_shards import FeatureShards, IQShards
from components.data.shards import AudioShards
from components.errors import UsageError
from components.recipes.shard import ShardWriter, json_bytes, tensor_bytes, wav_bytes
from components.registry import data_registry, load_catalog

KINDS = {
    "audio_shards": (AudioShards, "wav", lambda: wav_bytes(torch.zeros(1600), 16000)),
    "iq_shards": (IQShards, "pth", lambda: tensor_bytes(torch.zeros(2, 64))),
    "feature_shards": (FeatureShards, "pth", lambda: tensor_bytes(torch.zeros(1, 10, 8))),
}


def write_shard(folder: Path, name: str, categories: tuple[str, ...] = ("a", "b"), label_of=None) -> str:
    """One shard of data set ``name``'s members: a good item per category, then a key with a
    label but no signal member; beside it the manifest a features step writes."""
    _, extension, signal = KINDS[name]
    folder.mkdir(parents=True)
    writer = ShardWriter(folder, "s", None, None)
    for i, category in enumerate(categories):
        label = i if label_of is None else label_of[i]
        writer.add(f"k{i}", {extension: signal(), "json": json_bytes({"label": label, "category": category})})
    writer.add("nosignal", {"json": json_bytes({"label": 0, "category": categories[0]})})
    writer.close()
    manifest = {"transform": {"name": "kaldi_fbank", "settings": {}}, "feature_shape": [1, None, 8]}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return str(folder / "s-000000.tar")


@pytest.mark.parametrize("name", sorted(KINDS))
def test_bad_member_errors_and_warnings_name_the_data_set(tmp_path: Path, name: str) -> None:
    cls = KINDS[name][0]
    shard = write_shard(tmp_path / "shards", name)
    with pytest.raises(UsageError) as raised:
        cls(shards=shard, cache=False)
    assert str(raised.value).startswith(f"{name}: 1 bad sample(s) or shard(s):\n  "), str(raised.value)
    assert "member nosignal: no " in str(raised.value) and "--data.skip_bad_files" in str(raised.value)
    with pytest.warns(UserWarning) as caught:
        ds = cls(shards=shard, cache=False, skip_bad_files=True)
    assert [str(w.message).split(": skipped ")[0] for w in caught] == [name], [str(w.message) for w in caught]
    assert f"{name}: skipped 1 bad sample(s) or shard(s): " in str(caught[0].message)
    assert len(ds) == 2 and ds.skipped_files == [f"{shard}/nosignal"]


@pytest.mark.parametrize("name", sorted(KINDS))
def test_pattern_and_class_name_errors_name_the_data_set(tmp_path: Path, name: str) -> None:
    cls = KINDS[name][0]
    with pytest.raises(UsageError, match=rf"^{name}: no shard matches --data.shards 'none-\*.tar' under"):
        cls(shards="none-*.tar", root=str(tmp_path), cache=False)
    shard = write_shard(tmp_path / "shards", name, categories=("a", "b"), label_of=(0, 0))
    with pytest.raises(ValueError, match=rf"^{name}: class index 0 is named both 'a' and 'b'"):
        cls(shards=shard, cache=False, skip_bad_files=True)


def test_every_shard_data_set_is_named_as_registered() -> None:
    load_catalog()
    registered = {name: data_registry.get(name) for name in data_registry.list()}
    shard_sets = {name: cls for name, cls in registered.items() if isinstance(cls, type) and issubclass(cls, AudioShards)}
    assert set(shard_sets) >= set(KINDS)
    assert {name: cls.source_name for name, cls in shard_sets.items()} == {name: name for name in shard_sets}
