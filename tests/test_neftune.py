import math

import torch

from sftlab.training.neftune import NEFTune, example_lengths, noise_scale


def test_lengths_padded_rows_use_real_tokens():
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    assert example_lengths({"attention_mask": mask}).tolist() == [[3, 3, 3, 0, 0], [5, 5, 5, 5, 5]]


def test_lengths_packed_rows_use_each_examples_own_length():
    pos = torch.tensor([[0, 1, 2, 0, 1, 0, 1, 2, 3], [0, 1, 2, 3, 4, 5, 0, 1, 2]])
    assert example_lengths({"position_ids": pos}).tolist() == [
        [3, 3, 3, 2, 2, 4, 4, 4, 4],
        [6, 6, 6, 6, 6, 6, 3, 3, 3],
    ]


def test_noise_scale_is_alpha_over_sqrt_l_times_d():
    s = noise_scale(torch.tensor([[4, 4, 0]]), alpha=5.0, dim=16)
    assert torch.allclose(s, torch.tensor([[5 / 8, 5 / 8, 0.0]]))


def test_noise_is_uniform_within_the_scale_in_training_only():
    torch.manual_seed(0)
    emb = torch.nn.Embedding(50, 64)
    neft = NEFTune(emb, alpha=5.0)
    ids = torch.randint(0, 50, (2, 400))
    clean = emb.weight[ids]
    pos = torch.cat([torch.arange(100), torch.arange(300)]).repeat(2, 1)
    batch = {"input_ids": ids, "position_ids": pos}

    emb.train()
    neft.prepare(batch)
    noise = (emb(ids) - clean).detach()
    bound_100, bound_300 = 5 / math.sqrt(100 * 64), 5 / math.sqrt(300 * 64)
    first, second = noise[:, :100].abs(), noise[:, 100:].abs()
    assert first.max() <= bound_100 + 1e-7 and first.max() > 0.99 * bound_100
    assert second.max() <= bound_300 + 1e-7 and second.max() > 0.99 * bound_300
    # Uniform on [-b, b]: mean |x| = b/2.
    assert abs(first.mean().item() / bound_100 - 0.5) < 0.02

    emb.eval()
    neft.prepare(batch)
    assert torch.equal(emb(ids), clean)  # evaluation / generation: no noise
    emb.train()
    assert torch.equal(emb(ids), clean)  # no prepare() for this batch: no noise either
    neft.remove()
