from __future__ import annotations

from rlchat.batching import bucketed_batches, make_batch, pad
from rlchat.tokenizer import BOS_ID, EOS_ID, PAD_ID


def test_make_batch_shifts_targets_and_masks_padding():
    batch = make_batch([[7, 8, 9], [5]], [[10], [11, 12]])
    assert batch.src.tolist() == [[7, 8, 9], [5, PAD_ID, PAD_ID]]
    assert batch.src_lengths.tolist() == [3, 1]
    assert batch.tgt_in.tolist() == [[BOS_ID, 10, PAD_ID], [BOS_ID, 11, 12]]
    assert batch.tgt_out.tolist() == [[10, EOS_ID, PAD_ID], [11, 12, EOS_ID]]
    assert batch.tgt_mask.tolist() == [[True, True, False], [True, True, True]]
    assert batch.target_tokens == 5


def test_pad_of_nothing_is_empty():
    ids, lengths = pad([])
    assert ids.shape == (0, 0) and lengths.tolist() == []


def test_buckets_cover_every_example_once_and_group_similar_lengths():
    lengths = [(i * 7919) % 20 + 1 for i in range(1000)]
    batches = bucketed_batches(lengths, 32, seed=0, bucket_factor=10)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(1000))
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches)
    assert spread / len(batches) < 3  # random batches would spread over ~19


def test_buckets_are_seeded():
    lengths = list(range(100))
    assert bucketed_batches(lengths, 8, seed=1) == bucketed_batches(lengths, 8, seed=1)
    assert bucketed_batches(lengths, 8, seed=1) != bucketed_batches(lengths, 8, seed=2)
