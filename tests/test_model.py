from __future__ import annotations

import pytest
import torch

from rlchat.batching import make_batch
from rlchat.config import ModelConfig
from rlchat.model import Seq2Seq, StepWeights, dropout_disabled

V = 40


def tiny_model(**overrides) -> Seq2Seq:
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=V, embedding_dim=12, hidden_size=16, dropout=0.0)
    for key, value in overrides.items():
        setattr(config, key, value)
    return Seq2Seq(config).eval()


def random_examples(n: int, seed: int = 0) -> tuple[list[list[int]], list[list[int]]]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 9, (2, n), generator=g)
    sources = [torch.randint(5, V, (int(k),), generator=g).tolist() for k in lengths[0]]
    replies = [torch.randint(5, V, (int(k),), generator=g).tolist() for k in lengths[1]]
    return sources, replies


def logits_of(model: Seq2Seq, sources, replies) -> torch.Tensor:
    batch = make_batch(sources, replies)
    with torch.no_grad():
        return model(batch.src, batch.src_lengths, batch.tgt_in, batch.tgt_mask)


def test_logits_cover_only_real_target_positions():
    model = tiny_model()
    sources, replies = random_examples(6)
    logits = logits_of(model, sources, replies)
    assert logits.shape == (sum(len(r) + 1 for r in replies), V)


@pytest.mark.parametrize("attention", ["dot", "general", "concat"])
@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("input_feeding", [False, True])
def test_padding_never_changes_a_result(attention, bidirectional, input_feeding):
    model = tiny_model(
        attention=attention, bidirectional=bidirectional, input_feeding=input_feeding, layers=2
    )
    sources, replies = random_examples(7, seed=1)
    batched = logits_of(model, sources, replies)
    alone = torch.cat([logits_of(model, [s], [r]) for s, r in zip(sources, replies, strict=True)])
    torch.testing.assert_close(batched, alone, rtol=1e-5, atol=1e-5)


def test_whole_sequence_decoder_equals_the_step_by_step_decoder():
    model = tiny_model()
    sources, replies = random_examples(5, seed=2)
    batch = make_batch(sources, replies)
    with torch.no_grad():
        fast = model(batch.src, batch.src_lengths, batch.tgt_in, batch.tgt_mask)
        state = model.start(batch.src, batch.src_lengths)
        slow = model._stepwise_logits(batch.tgt_in, batch.tgt_mask, state, 1.0, None)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("attention", ["dot", "general"])
def test_packed_decoder_gradients_equal_the_step_by_step_decoders(attention):
    model = tiny_model(attention=attention, layers=2).train()
    sources, replies = random_examples(6, seed=3)
    batch = make_batch(sources, replies)
    gold = batch.tgt_out[batch.tgt_mask]

    def gradients(logits_fn) -> list[torch.Tensor]:
        model.zero_grad()
        loss = torch.nn.functional.cross_entropy(logits_fn(), gold)
        loss.backward()
        return [p.grad.clone() for p in model.parameters() if p.grad is not None]

    fast = gradients(lambda: model(batch.src, batch.src_lengths, batch.tgt_in, batch.tgt_mask))
    slow = gradients(
        lambda: model._stepwise_logits(
            batch.tgt_in, batch.tgt_mask, model.start(batch.src, batch.src_lengths), 1.0, None
        )
    )
    assert len(fast) == len(slow) > 0
    for a, b in zip(fast, slow, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_skipping_the_padding_changes_no_logit(monkeypatch):
    from rlchat.model import Decoder

    model = tiny_model(layers=2)
    sources, replies = random_examples(8, seed=4)
    packed = logits_of(model, sources, replies)
    monkeypatch.setattr(Decoder, "skip_padding", False)
    padded = logits_of(model, sources, replies)
    assert packed.shape == padded.shape
    torch.testing.assert_close(packed, padded, rtol=1e-5, atol=1e-5)


def test_scheduled_sampling_feeds_predictions_and_is_seeded():
    model = tiny_model()
    sources, replies = random_examples(8, seed=3)
    batch = make_batch(sources, replies)
    with torch.no_grad():
        gold = model(batch.src, batch.src_lengths, batch.tgt_in, batch.tgt_mask)
        args = (batch.src, batch.src_lengths, batch.tgt_in, batch.tgt_mask)
        a = model(*args, teacher_forcing=0.0, generator=torch.Generator().manual_seed(1))
        b = model(*args, teacher_forcing=0.5, generator=torch.Generator().manual_seed(1))
        c = model(*args, teacher_forcing=0.5, generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(a, gold)
    torch.testing.assert_close(b, c)


def test_tied_embeddings_share_one_tensor():
    model = tiny_model(tie_embeddings=True)
    assert model.decoder.out.weight is model.encoder.embedding.weight
    untied = tiny_model(tie_embeddings=False)
    assert untied.decoder.out.weight is not untied.encoder.embedding.weight


def test_unknown_attention_is_refused():
    with pytest.raises(ValueError, match="unknown attention"):
        tiny_model(attention="bahdanau")


def test_dropout_disabled_is_training_mode_with_eval_outputs_and_restores_the_model():
    model = tiny_model(dropout=0.5, layers=2)
    sources, replies = random_examples(6)
    model.eval()
    expected = logits_of(model, sources, replies)
    model.train()
    with dropout_disabled(model):
        assert model.training  # cuDNN's LSTM backward needs training mode
        torch.testing.assert_close(logits_of(model, sources, replies), expected)
    assert model.training
    assert all(m.p == 0.5 for m in model.modules() if isinstance(m, torch.nn.Dropout))
    assert all(m.dropout == 0.5 for m in model.modules() if isinstance(m, torch.nn.LSTM))
    torch.manual_seed(0)
    assert not torch.allclose(logits_of(model, sources, replies), expected)  # dropout back on


def test_samples_and_references_scored_from_one_encoder_pass_match_separate_passes():
    model = tiny_model()
    sources, replies = random_examples(5, seed=3)
    _, samples = random_examples(10, seed=4)  # two per input, input-major
    sample_batch = make_batch([s for s in sources for _ in range(2)], samples)
    reference_batch = make_batch(sources, replies)
    with torch.no_grad():
        both = model(
            reference_batch.src,
            reference_batch.src_lengths,
            sample_batch.tgt_in,
            sample_batch.tgt_mask,
            repeat=2,
            also=(reference_batch.tgt_in, reference_batch.tgt_mask),
        )
    assert torch.allclose(
        both[0], logits_of(model, [s for s in sources for _ in range(2)], samples), atol=1e-5
    )
    assert torch.allclose(both[1], logits_of(model, sources, replies), atol=1e-5)


def step_once(model: Seq2Seq, sources) -> torch.Tensor:
    from rlchat.batching import encode_inputs

    state = model.start(*encode_inputs(sources))
    tokens = torch.full((len(sources),), 1, dtype=torch.long)
    log_probs, _ = model.step_log_probs(tokens, state)
    return log_probs


@pytest.mark.parametrize("tie_embeddings", [True, False])
def test_decoding_without_gradient_uses_column_major_copies_with_the_same_results(
    tie_embeddings,
):
    model = tiny_model(tie_embeddings=tie_embeddings, layers=2)
    sources, _ = random_examples(8)
    with torch.inference_mode():
        copies = warm_copies(model)
        fast = step_once(model, sources)
    assert set(copies) == set(model.decoder.step_matrices())
    for name, weight in model.decoder.step_matrices().items():
        assert torch.equal(copies[name], weight)  # the same matrix ...
        assert copies[name].t().is_contiguous() and not copies[name].is_contiguous()  # ... stored
    with torch.enable_grad():  # with gradient: the parameters themselves
        assert model.decoder.inference_weights() is None
        with_parameters = step_once(model, sources)
    torch.testing.assert_close(fast, with_parameters.detach(), atol=1e-5, rtol=0)


def warm_copies(model: Seq2Seq) -> dict[str, torch.Tensor]:
    """The copies, once the weights have been used unchanged often enough to be copied."""
    for _ in range(StepWeights.reuses_before_copying - 1):
        assert model.decoder.inference_weights() is None  # too new to copy
    copies = model.decoder.inference_weights()
    assert copies is not None
    return copies


def test_column_major_copies_follow_every_change_of_the_weights():
    model = tiny_model()
    with torch.no_grad():
        first = warm_copies(model)["out"]
        assert model.decoder.inference_weights()["out"] is first  # kept while nothing changes
        model.decoder.out.weight.add_(1.0)  # as an optimiser step does: the parameters again
        assert torch.equal(warm_copies(model)["out"], model.decoder.out.weight)
        model.load_state_dict(tiny_model(hidden_size=16).state_dict())  # as a load does
        for name, weight in warm_copies(model).items():
            assert torch.equal(weight, model.decoder.step_matrices()[name])
