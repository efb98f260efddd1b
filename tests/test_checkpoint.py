from __future__ import annotations

import json

import pytest
import torch

from rlchat.batching import make_batch
from rlchat.checkpoint import (
    CheckpointError,
    flatten_optimizer,
    load_bundle,
    load_weights,
    save_bundle,
    unflatten_optimizer,
)
from rlchat.config import ModelConfig, from_dict, to_dict
from rlchat.model import Seq2Seq


def model_and_outputs(config: ModelConfig, model: Seq2Seq | None = None):
    torch.manual_seed(0)
    model = model or Seq2Seq(config)
    model.eval()
    batch = make_batch([[5, 6, 7], [8, 9]], [[10, 11], [12]])
    with torch.no_grad():
        return model, model(batch.src, batch.src_lengths, batch.tgt_in, batch.tgt_mask)


@pytest.fixture
def config():
    return ModelConfig(vocab_size=30, embedding_dim=8, hidden_size=16, dropout=0.0)


def test_bundle_reloads_to_identical_outputs(tmp_path, config):
    model, expected = model_and_outputs(config)
    save_bundle(tmp_path / "b", model=model, config={"model": to_dict(config)}, tokenizer_json="{}")
    bundle = load_bundle(tmp_path / "b")
    rebuilt = Seq2Seq(from_dict(ModelConfig, bundle.config["model"]))
    load_weights(rebuilt, bundle.weights)
    _, outputs = model_and_outputs(config, rebuilt)
    assert torch.equal(outputs, expected)
    assert rebuilt.decoder.out.weight is rebuilt.encoder.embedding.weight


def test_a_bundle_is_readable_by_other_users(tmp_path, config):
    """A server in a container or under systemd runs as another user than the trainer."""
    model, _ = model_and_outputs(config)
    path = save_bundle(tmp_path / "b", model=model, config={}, tokenizer_json="{}")
    assert path.stat().st_mode & 0o755 == 0o755
    assert all(f.stat().st_mode & 0o044 == 0o044 for f in path.iterdir())


def test_corrupt_file_is_detected(tmp_path, config):
    model, _ = model_and_outputs(config)
    path = save_bundle(tmp_path / "b", model=model, config={}, tokenizer_json="{}")
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match="model.safetensors fails its checksum"):
        load_bundle(path)


def test_missing_checksums_means_incomplete(tmp_path, config):
    model, _ = model_and_outputs(config)
    path = save_bundle(tmp_path / "b", model=model, config={}, tokenizer_json="{}")
    (path / "checksums.json").unlink()
    with pytest.raises(CheckpointError, match="incomplete"):
        load_bundle(path)


def test_failed_save_keeps_the_previous_bundle_and_leaves_no_debris(tmp_path, config, monkeypatch):
    model, _ = model_and_outputs(config)
    path = save_bundle(tmp_path / "b", model=model, config={"n": 1}, tokenizer_json="{}")
    import rlchat.checkpoint as checkpoint

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint, "save_file", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_bundle(path, model=model, config={"n": 2}, tokenizer_json="{}")
    assert load_bundle(path).config == {"n": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_optimizer_state_round_trips_through_tensors_and_json(config):
    model, _ = model_and_outputs(config)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    batch = make_batch([[5, 6]], [[7]])
    model(batch.src, batch.src_lengths, batch.tgt_in, batch.tgt_mask).sum().backward()
    optimizer.step()
    tensors, meta = flatten_optimizer(optimizer)
    meta = json.loads(json.dumps(meta))
    restored = torch.optim.Adam(model.parameters(), lr=1.0)
    restored.load_state_dict(unflatten_optimizer(tensors, meta))
    original, loaded = optimizer.state_dict(), restored.state_dict()
    assert original["param_groups"] == loaded["param_groups"]
    for key, state in original["state"].items():
        for name, value in state.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(loaded["state"][key][name]))


def test_weights_that_do_not_fit_are_refused(tmp_path, config):
    model, _ = model_and_outputs(config)
    save_bundle(tmp_path / "b", model=model, config={}, tokenizer_json="{}")
    bigger = Seq2Seq(ModelConfig(vocab_size=30, embedding_dim=8, hidden_size=32, dropout=0.0))
    with pytest.raises(RuntimeError):
        load_weights(bigger, load_bundle(tmp_path / "b").weights)
