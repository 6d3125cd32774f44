"""The reference cache: storage, keys, the top-K loss, and GIFTTrainer reading it across epochs."""

import json
import math
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset

from gift_lite import losses, refcache
from gift_lite.models import LoraSettings, load_lora
from gift_lite.cached_reference import INDEX_COLUMN
from gift_lite.trainer import GIFTConfig, GIFTTrainer

SPECS = {"hidden": ((3,), torch.float32), "ids": ((2,), torch.int32), "gold": ((), torch.float32)}


def fill(counts, seed=0):
    """Rows for each example, and ``batches`` in a shuffled order with uneven batch sizes."""
    gen = torch.Generator().manual_seed(seed)
    per_example = [{"hidden": torch.randn(c, 3, generator=gen), "ids": torch.randint(0, 9, (c, 2), generator=gen).int(),
                    "gold": torch.randn(c, generator=gen)} for c in counts]
    order = [i for i in (3, 0, 2, 1, 4) if i < len(counts)]  # not the index order
    batches = [order[:1], order[1:]]
    return per_example, [(ids, {k: torch.cat([per_example[i][k] for i in ids]) for k in SPECS}) for ids in batches]


def test_build_then_open_gives_each_examples_rows_in_the_order_asked(tmp_path):
    counts = [2, 0, 3, 1, 4]
    per_example, batches = fill(counts)
    built = refcache.build_cache(tmp_path, "k1", counts, SPECS, batches)
    cache = refcache.open_cache(tmp_path, "k1")
    assert cache is not None and list(cache.counts) == counts
    for c in (built, cache):
        rows = c.rows([4, 1, 0])
        for name in SPECS:
            torch.testing.assert_close(rows[name], torch.cat([per_example[i][name] for i in (4, 1, 0)]),
                                       rtol=0, atol=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["k1"]  # no temporary folder left
    assert sorted(p.name for p in (tmp_path / "k1").iterdir()) == ["gold.npy", "hidden.npy", "ids.npy",
                                                                    "meta.json", "offsets.npy"]


def test_bfloat16_rows_round_trip_exactly(tmp_path):
    rows = torch.randn(5, 4).bfloat16()
    cache = refcache.build_cache(tmp_path, "bf", [2, 3], {"hidden": ((4,), torch.bfloat16)},
                                 [([0, 1], {"hidden": rows})])
    out = refcache.open_cache(tmp_path, "bf").rows([1, 0])["hidden"]
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, torch.cat([rows[2:], rows[:2]]))
    assert cache.arrays["hidden"].dtype == np.uint16


def test_files_are_plain_npy_without_pickles(tmp_path):
    counts = [1, 2]
    _, batches = fill(counts)
    refcache.build_cache(tmp_path, "k", counts, SPECS, batches)
    for path in (tmp_path / "k").glob("*.npy"):
        np.load(path, allow_pickle=False)  # raises if an object array (pickle) were stored


@pytest.mark.parametrize("damage", ["meta_missing", "wrong_key", "truncated", "bad_offsets"])
def test_a_damaged_or_mismatched_folder_is_never_reused_and_is_rebuilt(tmp_path, damage):
    counts = [2, 3]
    _, batches = fill(counts)
    refcache.build_cache(tmp_path, "k", counts, SPECS, batches)
    folder = tmp_path / "k"
    if damage == "meta_missing":
        (folder / "meta.json").unlink()
    elif damage == "wrong_key":
        meta = json.loads((folder / "meta.json").read_text())
        (folder / "meta.json").write_text(json.dumps({**meta, "key": "other"}))
    elif damage == "truncated":
        data = (folder / "hidden.npy").read_bytes()
        (folder / "hidden.npy").write_bytes(data[:-8])
    else:
        np.save(folder / "offsets.npy", np.array([0, 1, 5]))
    assert refcache.open_cache(tmp_path, "k", counts) is None
    per_example, batches = fill(counts, seed=1)
    rebuilt = refcache.build_cache(tmp_path, "k", counts, SPECS, batches)
    torch.testing.assert_close(rebuilt.rows([0])["hidden"], per_example[0]["hidden"], rtol=0, atol=0)


@pytest.mark.parametrize("problem", ["missing", "twice", "wrong_rows"])
def test_an_incomplete_build_raises_and_leaves_nothing(tmp_path, problem):
    counts = [2, 3]
    per_example, batches = fill(counts)
    if problem == "missing":
        batches = batches[:1]
    elif problem == "twice":
        batches = batches + batches[:1]
    else:
        ids, rows = batches[0]
        batches = [(ids, {**rows, "hidden": rows["hidden"][:-1]})] + batches[1:]
    with pytest.raises(ValueError):
        refcache.build_cache(tmp_path, "k", counts, SPECS, batches)
    assert list(tmp_path.iterdir()) == []


def test_fingerprints_follow_weights_rows_and_tokenizer_not_adapters(tiny_model_dir, tokenizer):
    model = load_lora(tiny_model_dir, LoraSettings(r=4, lora_alpha=8))
    before = refcache.model_fingerprint(model)
    with torch.no_grad():
        next(p for n, p in model.named_parameters() if "lora_B" in n).add_(1.0)
    assert refcache.model_fingerprint(model) == before  # adapters are not the base
    with torch.no_grad():
        model.get_base_model().lm_head.weight[0, 0] += 1e-3
    assert refcache.model_fingerprint(model) != before
    ids, labels = [[1, 2, 3], [4, 5]], [[-100, 2, 3], [-100, 5]]
    key = refcache.rows_fingerprint(ids, labels)
    assert refcache.rows_fingerprint(ids, [[-100, -100, 3], [-100, 5]]) != key
    assert refcache.rows_fingerprint([[1, 2], [3, 4, 5]], [[-100, 2], [3, 4, 5]]) != key  # row boundaries
    assert refcache.tokenizer_fingerprint(tokenizer) == refcache.tokenizer_fingerprint(tokenizer)
    assert refcache.cache_key({"a": 1}) != refcache.cache_key({"a": 2})


# -- the top-K loss ------------------------------------------------------------------------------
def topk_case(k, seed=0, n=30, vocab=24, dim=6):
    gen = torch.Generator().manual_seed(seed)
    h = torch.randn(n, dim, generator=gen).requires_grad_()
    w = torch.randn(vocab, dim, generator=gen).requires_grad_()
    b = torch.randn(vocab, generator=gen).requires_grad_()
    ref_h = 2 * torch.randn(n, dim, generator=gen)
    y = torch.randint(0, vocab, (n,), generator=gen)
    return h, w, b, ref_h, y, refcache.reference_rows(ref_h, y, w.detach(), b.detach(), k)


@pytest.mark.parametrize("beta,smooth_lambda", [(0.0, 0.0), (1.0, 0.0), (20.0, 0.0), (2.0, 0.1), (math.inf, 0.0)])
def test_topk_loss_with_the_whole_vocabulary_is_the_live_fused_loss(beta, smooth_lambda):
    h, w, b, ref_h, y, rows = topk_case(k=24)
    kw = dict(beta=beta, smooth_lambda=smooth_lambda, bias=b)
    got = refcache.topk_gift_loss(h, w, y, rows["topk_ids"], rows["topk_logprobs"], rows["gold_logprobs"],
                                  chunk_size=7, **kw)
    grads = torch.autograd.grad(got, (h, w, b))
    want = losses.fused_gift_loss(h, ref_h, w, y, **kw)
    for g, e in zip(grads, torch.autograd.grad(want, (h, w, b))):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("k", [0, 3])
def test_topk_loss_is_gift_loss_on_the_rebuilt_target(k):
    """The sparse computation equals gift_loss on the dense log p_tilde (same target, no [n x V])."""
    h, w, b, _, y, rows = topk_case(k)
    for beta in (0.5, 20.0):
        got = refcache.topk_gift_loss(h, w, y, rows["topk_ids"], rows["topk_logprobs"], rows["gold_logprobs"],
                                      beta=beta, bias=b)
        approx = refcache.approx_ref_logits(rows["topk_ids"], rows["topk_logprobs"], rows["gold_logprobs"], y, 24)
        want = losses.gift_loss(F.linear(h, w, b), approx, y, beta=beta)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        for g, e in zip(torch.autograd.grad(got, (h, w)), torch.autograd.grad(want, (h, w))):
            torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-6)


def test_topk_target_error_is_within_its_bound_and_shrinks_with_k_and_beta():
    _, w, b, ref_h, y, _ = topk_case(k=0)
    logits = F.linear(ref_h, w.detach(), b.detach())
    errors = {(k, beta): refcache.topk_target_error(logits, y, k, beta=beta) for k in (2, 8, 24) for beta in (0.0, 5.0)}
    for e in errors.values():
        assert e["target/tv_max"] <= e["target/tv_bound_max"] + 1e-6
    assert errors[(24, 0.0)]["target/tv_max"] < 1e-6  # the whole vocabulary: exact
    assert errors[(2, 0.0)]["target/tv_mean"] > errors[(8, 0.0)]["target/tv_mean"]
    assert errors[(8, 5.0)]["target/tv_mean"] < errors[(8, 0.0)]["target/tv_mean"]


# -- GIFTTrainer with the cache ------------------------------------------------------------------
def cached_config(tmp_path, name, **overrides):
    settings = dict(output_dir=str(tmp_path / name), num_train_epochs=2, per_device_train_batch_size=2,
                    learning_rate=5e-2, optim="sgd", logging_steps=1, save_strategy="no", report_to=[],
                    use_cpu=True, seed=0, disable_tqdm=True, max_length=64, loss_type="gift", beta=1.0)
    settings.update(overrides)
    return GIFTConfig(**settings)


def train_lora(model_dir, tokenizer, rows, config):
    torch.manual_seed(0)  # the LoRA initialisation draws from the global RNG
    model = load_lora(model_dir, LoraSettings(r=4, lora_alpha=8))
    trainer = GIFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    result = trainer.train()
    return trainer, result, {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


def test_cached_training_equals_live_training_and_the_cache_is_reused(tiny_model_dir, tokenizer, sft_rows, tmp_path):
    """Two epochs of shuffled batches (SGD, so updates follow gradients): the cached reference
    gives the live one's adapters; a second trainer opens the cache instead of rebuilding it."""
    rows = sft_rows + sft_rows[:1]  # 5 rows in batches of 3: the last batch of each epoch is short
    batch = {"per_device_train_batch_size": 3}
    _, live_result, live = train_lora(tiny_model_dir, tokenizer, rows, cached_config(tmp_path, "live", **batch))
    cache_dir = tmp_path / "cache"
    for run in ("first", "second"):
        trainer, result, cached = train_lora(tiny_model_dir, tokenizer, rows,
                                             cached_config(tmp_path, run, reference_cache=str(cache_dir), **batch))
        assert (trainer.ref_cache_build_s is None) == (run == "second")
        assert math.isclose(result.training_loss, live_result.training_loss, rel_tol=1e-6)
        for n in live:
            torch.testing.assert_close(cached[n], live[n], rtol=1e-5, atol=1e-7)
    assert len([p for p in cache_dir.iterdir() if not p.name.startswith(".")]) == 1
    assert trainer.ref_cache.meta["n_examples"] == len(rows)


def test_topk_cache_with_the_whole_vocabulary_equals_live(tiny_model_dir, tokenizer, sft_rows, tmp_path):
    _, _, live = train_lora(tiny_model_dir, tokenizer, sft_rows, cached_config(tmp_path, "live", num_train_epochs=1))
    config = cached_config(tmp_path, "topk", num_train_epochs=1, reference_cache=str(tmp_path / "cache"),
                           reference_cache_topk=len(tokenizer))
    _, _, cached = train_lora(tiny_model_dir, tokenizer, sft_rows, config)
    for n in live:
        torch.testing.assert_close(cached[n], live[n], rtol=1e-5, atol=1e-7)


def test_other_data_gets_its_own_cache(tiny_model_dir, tokenizer, sft_rows, tmp_path):
    cache_dir = tmp_path / "cache"
    for name, rows in (("a", sft_rows), ("b", sft_rows[:3])):
        trainer, _, _ = train_lora(tiny_model_dir, tokenizer, rows,
                                   cached_config(tmp_path, name, num_train_epochs=1, reference_cache=str(cache_dir)))
        assert trainer.ref_cache_build_s is not None  # built, never borrowed from the other data
    assert len(list(cache_dir.iterdir())) == 2


def test_the_row_index_survives_the_collator(tiny_model_dir, tokenizer, sft_rows, tmp_path):
    config = cached_config(tmp_path, "idx", reference_cache=str(tmp_path / "cache"))
    trainer = GIFTTrainer(model=load_lora(tiny_model_dir, LoraSettings(r=4, lora_alpha=8)), args=config,
                          train_dataset=Dataset.from_list(sft_rows), processing_class=tokenizer)
    seen = []
    for batch in trainer.get_train_dataloader():
        for row, index in zip(batch["input_ids"], batch[INDEX_COLUMN].tolist()):
            ids = trainer.train_dataset[index]["input_ids"]
            assert row[:len(ids)].tolist() == ids
            seen.append(index)
    assert sorted(seen) == list(range(len(sft_rows)))
    pickle.loads(pickle.dumps(trainer.data_collator))  # dataloader workers receive it pickled


@pytest.mark.parametrize("overrides", [dict(loss_type="sft"), dict(fused_loss=False), dict(packing=True),
                                       dict(reference_cache=None, reference_cache_topk=4),
                                       dict(reference_cache_topk=-1)])
def test_config_rejects_cache_settings_it_cannot_honour(overrides, tmp_path):
    settings = {"reference_cache": str(tmp_path / "cache"), **overrides}
    with pytest.raises(ValueError, match="reference_cache"):
        cached_config(tmp_path, "bad", **settings)
