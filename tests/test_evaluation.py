"""Decoder candidate scoring: one forward pass per instance when every candidate is one token."""

import torch

from conftest import tiny_gpt2, tiny_llama
from resprompt import ResidualPromptConfig, ResidualPromptModel
from resprompt.tasks.evaluation import decoder_scores
from resprompt.tasks.features import Feature, merge_single_token_candidates


def _row(prefix, cand, index, c):
    ids = prefix + cand
    return Feature(ids, 0, score_mask=[0] * len(prefix) + [1] * len(cand), index=index, candidate=c)


def _feats():
    return [
        _row([1, 5, 6, 7], [11], 0, 0), _row([1, 5, 6, 7], [12], 0, 1), _row([1, 5, 6, 7], [13], 0, 2),
        _row([1, 8, 9], [11], 1, 0), _row([1, 8, 9], [12], 1, 1), _row([1, 8, 9], [13], 1, 2),
        _row([1, 20], [30, 31], 2, 0), _row([1, 20], [32], 2, 1),  # a two-token candidate: not merged
        _row([1, 40, 41, 42, 43, 44], [11], 3, 0), _row([1, 40, 41, 42, 43, 45], [12], 3, 1),  # prefixes differ
    ]


def test_merge_single_token_candidates_exact():
    rows, targets = merge_single_token_candidates(_feats())
    assert [r.input_ids for r in rows] == [
        [1, 5, 6, 7], [1, 8, 9], [1, 20, 30, 31], [1, 20, 32],
        [1, 40, 41, 42, 43, 44, 11], [1, 40, 41, 42, 43, 45, 12]]
    assert targets == [[(0, 11), (1, 12), (2, 13)], [(0, 11), (1, 12), (2, 13)], None, None, None, None]
    assert [r.index for r in rows] == [0, 1, 2, 2, 3, 3]
    assert rows[0].score_mask == [0, 0, 0, 0]


def test_merged_scores_equal_one_row_per_candidate():
    for build in (tiny_gpt2, tiny_llama):
        torch.manual_seed(1)
        m = ResidualPromptModel(build(), ResidualPromptConfig(num_tokens=4, bottleneck=8, init_seed=0)).eval()
        with torch.no_grad():
            for p in m.trainable_parameters().values():
                p.add_(torch.randn_like(p) * 0.1)
        for bs in (1, 3, 16):
            merged = decoder_scores(m, _feats(), pad_id=0, batch_size=bs, merge=True)
            plain = decoder_scores(m, _feats(), pad_id=0, batch_size=bs, merge=False)
            assert merged.keys() == plain.keys() == {(f.index, f.candidate) for f in _feats()}
            for k in plain:
                assert abs(merged[k] - plain[k]) < 1e-5, (build.__name__, bs, k)
        # the scores are real log-likelihoods: one candidate row alone, by hand
        with torch.no_grad():
            lp = m(torch.tensor([[1, 5, 6, 7, 12]])).logits[0, -2].log_softmax(-1)[12].item()
        assert abs(merged[(0, 1)] - lp) < 1e-5


def test_best_candidates_first_wins_ties():
    from resprompt.tasks.evaluation import best_candidates

    assert best_candidates({(0, 0): -1.0, (0, 1): -0.5, (1, 0): -2.0, (1, 1): -2.0, (1, 2): -3.0}) == {0: 1, 1: 0}
