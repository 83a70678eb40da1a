"""The seeded batch stream of fine-tuning and adapter training: grouped by length, random, complete."""

import random
from collections import Counter

import pytest
import torch

from mlu_training.batching import GROUP_BATCHES, BatchStream

LENGTHS = [random.Random(i).randint(5, 60) for i in range(100)]  # a seeded spread of token lengths


def draw(n_batches: int, seed: int = 0, lengths=LENGTHS, batch_size: int = 8, n_rows: int | None = None):
    stream = BatchStream(n_rows or len(lengths), batch_size, torch.Generator().manual_seed(seed), lengths)
    return [next(stream) for _ in range(n_batches)]


def real_share(batches, lengths=LENGTHS) -> float:
    """Real tokens over the tokens computed when each batch is padded to its longest row."""
    return sum(sum(lengths[r] for r in b) for b in batches) / sum(len(b) * max(lengths[r] for r in b) for b in batches)


def test_the_same_seed_gives_the_same_batches():
    assert draw(30) == draw(30)
    assert draw(30, seed=1) != draw(30)


def test_each_epoch_gives_every_row_once_in_full_batches_but_one():
    epoch = draw(13)  # 100 rows, batches of 8: twelve full ones and one of 4
    assert Counter(r for b in epoch for r in b) == Counter(range(100))
    assert sorted(len(b) for b in epoch) == [4] + [8] * 12
    assert Counter(r for b in draw(26)[13:] for r in b) == Counter(range(100))  # and the next epoch again


def test_grouped_batches_are_mostly_real_tokens_and_still_random():
    grouped = draw(13)
    plain = draw(13, lengths=None, n_rows=100)
    assert real_share(grouped) > 0.8 and real_share(plain) < 0.6, (real_share(grouped), real_share(plain))
    # A window sorts GROUP_BATCHES batches only: the next epoch groups other rows together.
    assert {tuple(sorted(b)) for b in draw(26)[:13]} != {tuple(sorted(b)) for b in draw(26)[13:]}
    assert GROUP_BATCHES * 8 < 100


def test_the_plain_stream_cuts_permutations_into_full_batches():
    plain = draw(30, lengths=None, n_rows=100)
    assert all(len(b) == 8 for b in plain)
    rows = [r for b in plain for r in b]
    assert sorted(rows[:100]) == list(range(100)) and sorted(rows[100:200]) == list(range(100))


def test_fewer_rows_than_a_batch_make_one_batch_of_all_rows():
    assert [sorted(b) for b in draw(3, lengths=[3, 1, 2], batch_size=8)] == [[0, 1, 2]] * 3


def test_bad_streams_are_refused():
    with pytest.raises(ValueError, match="3 lengths for 4 rows"):
        BatchStream(4, 2, torch.Generator(), [1, 2, 3])
    with pytest.raises(ValueError, match="needs rows"):
        BatchStream(0, 2, torch.Generator())
