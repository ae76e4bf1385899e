"""Meta's released entropy model (load_entropy_model("hf:...")), offline: a tiny random Hugging Face BLT,
saved with save_pretrained, loaded through our loader, gives transformers' own patcher entropies through the
repo's compute_entropies (within 1e-5)."""
import shutil

import numpy as np
import pytest
import torch

from entropy_llm import EntropyStream, compute_entropies, score_sequences
from save_entropy_model import (
    CheckpointError,
    HFEntropyModel,
    describe,
    load_entropy_model,
    load_hf_entropy_model,
    model_fingerprint,
    save_checkpoint,
)

transformers = pytest.importorskip("transformers")
pytest.importorskip("transformers.models.blt")

SW = 8  # tiny sliding window; 2 layers: receptive field 2 * (SW - 1) = 14 positions, exact window 30
MPE = 128  # max_position_embeddings: the default max_seq_len


def tiny_blt(sliding_window=SW, seed=0):
    from transformers import BltConfig, BltForCausalLM

    small = dict(vocab_size=260, hidden_size=32, num_attention_heads=4, intermediate_size=64,
                 max_position_embeddings=MPE)
    cfg = BltConfig(
        vocab_size=260, max_position_embeddings=256, local_attention_window_len=16, cross_attn_k=2,
        encoder_hash_byte_group_size=[3, 4], encoder_hash_byte_group_vocab=64,
        patcher_config=dict(small, num_hidden_layers=2, sliding_window=sliding_window),
        encoder_config=dict(small, num_hidden_layers=1, hidden_size_global=64),
        decoder_config=dict(small, num_hidden_layers=1, hidden_size_global=64),
        global_config=dict(hidden_size=64, num_hidden_layers=1, num_attention_heads=4, intermediate_size=128,
                           max_position_embeddings=MPE),
        bos_token_id=1, eos_token_id=2, pad_token_id=3)
    torch.manual_seed(seed)
    return BltForCausalLM(cfg).eval()


def hf_entropies(hf_model, data: bytes) -> np.ndarray:
    """transformers' own patcher on [BOS] + bytes + 4, one pass: entropy at position i is that of byte i."""
    ids = torch.tensor([[1] + [b + 4 for b in data]])
    with torch.no_grad():
        ent, _, _ = hf_model.model.patcher(ids)
    return ent[0, : len(data)].numpy()


DOC = (("The Byte Latent Transformer patches bytes by the entropy of the next byte. " * 3).encode()
       + bytes(range(0, 256, 7)))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    hf = tiny_blt()
    d = tmp_path_factory.mktemp("blt")
    hf.save_pretrained(d)
    return hf, str(d)


def test_entropies_equal_transformers_patcher(saved):
    hf, d = saved
    model = load_entropy_model(f"hf:{d}")  # the path every script takes
    assert isinstance(model, HFEntropyModel) and model.config.max_seq_len == MPE
    doc = DOC[:MPE]  # a document that fits the default window: exact
    H = compute_entropies(model, doc)
    assert H.dtype == np.float32 and H.shape == (len(doc),)
    np.testing.assert_allclose(H, hf_entropies(hf, doc), atol=1e-5, rtol=0)
    # a batch of documents of other lengths (rows padded on the right)
    docs = [DOC[:1], DOC[:17], DOC[5:90], b""]
    for doc, h in zip(docs, compute_entropies(model, docs)):
        np.testing.assert_allclose(h, hf_entropies(hf, doc) if doc else np.zeros(0), atol=1e-5, rtol=0)
    # the released threshold rides along
    assert model.config.hf_threshold == pytest.approx(1.335442066192627)


def test_a_saved_hf_entropy_model_loads_offline_as_a_checkpoint(saved, tmp_path):
    _, d = saved
    model = load_hf_entropy_model(d)
    save_checkpoint(model, str(tmp_path / "meta.pth"))
    again = load_entropy_model(str(tmp_path / "meta.pth"))
    assert isinstance(again, HFEntropyModel) and model_fingerprint(again) == model_fingerprint(model)
    assert "hf_blt_patcher" in describe(str(tmp_path / "meta.pth"))


def test_long_documents_exact_window(saved):
    """Past one window: exact with max_seq_len = exact_window, and only approximate below it."""
    hf, d = saved
    model = load_hf_entropy_model(d)
    W = model.config.exact_window
    assert W == 2 * (2 * (SW - 1) + 1)
    exact = load_hf_entropy_model(d, max_seq_len=W)
    assert len(DOC) > 8 * W  # many overlapping windows
    ref = hf_entropies(hf, DOC)
    np.testing.assert_allclose(compute_entropies(exact, DOC), ref, atol=1e-5, rtol=0)
    short = load_hf_entropy_model(d, max_seq_len=2 * SW)  # sees one layer's window only: differs
    assert np.abs(compute_entropies(short, DOC) - ref).max() > 1e-3


def test_full_attention_patcher(tmp_path):
    hf = tiny_blt(sliding_window=None, seed=1)
    hf.save_pretrained(tmp_path)
    model = load_hf_entropy_model(str(tmp_path))
    assert model.config.max_seq_len == MPE and model.config.exact_window is None
    doc = DOC[:MPE]  # within one window: full attention has no exact long-document equivalent in windows
    np.testing.assert_allclose(compute_entropies(model, doc), hf_entropies(hf, doc), atol=1e-5, rtol=0)


def test_renormalized_mode(saved):
    hf, d = saved
    model = load_hf_entropy_model(d, specials="renormalize")
    assert model.config.vocab_size == 256
    ids = torch.tensor([[1] + [b + 4 for b in DOC[:40]]])
    with torch.no_grad():
        _, _, logits = hf.model.patcher(ids)
    logp = torch.log_softmax(logits[0, :40, 4:], -1)  # HF's logits renormalised over the 256 byte ids
    ref = -(logp.exp() * logp).sum(-1).numpy()
    H = compute_entropies(model, DOC[:40])
    np.testing.assert_allclose(H, ref, atol=1e-5, rtol=0)
    assert np.abs(H - hf_entropies(hf, DOC[:40])).max() > 1e-3  # not HF's 260-way entropy: specials matter


def test_logits_layout_and_causality(saved):
    _, d = saved
    model = load_hf_entropy_model(d)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (2, 24), generator=g)
    logits, loss = model(x, targets=x)
    assert logits.shape == (2, 24, 260) and torch.isfinite(loss)
    for k in (0, 5, 23):
        y = x.clone()
        y[:, k] = (y[:, k] + 1) % 256
        ly, _ = model(y)
        assert torch.equal(logits[:, : k + 1], ly[:, : k + 1])  # positions <= k never read byte k
        if k < 23:
            assert not torch.allclose(logits[:, k + 1:], ly[:, k + 1:])
    # rows never see each other
    l0, _ = model(x[:1])
    torch.testing.assert_close(l0, logits[:1], atol=1e-5, rtol=0)
    # bytes-per-byte NLL works through the repo's scorer (byte b is column b)
    ent, nll = score_sequences(model, [DOC[:50]], want_nll=True)
    assert np.all(nll[0] > 0) and np.all(np.isfinite(ent[0]))


def test_streaming_matches_forward(saved):
    _, d = saved
    model = load_hf_entropy_model(d)
    x = torch.tensor([list(DOC[: 3 * SW])])
    full, _ = model(x)  # logits[:, t] predicts byte t
    caches = model.new_caches(1, x.size(1) + 1)
    got = [model.step(None, caches)]  # BOS: predicts byte 0
    got.append(model.step(x[:, :5], caches))  # a chunk: predicts bytes 1..5
    for t in range(5, x.size(1) - 1):  # then byte by byte, past the sliding window
        got.append(model.step(x[:, t:t + 1], caches))
    torch.testing.assert_close(torch.cat(got, 1), full, atol=1e-5, rtol=0)


def test_fingerprint_and_state_roundtrip(saved, tmp_path):
    hf, d = saved
    a, b = load_hf_entropy_model(d), load_hf_entropy_model(d)
    assert model_fingerprint(a) == model_fingerprint(b)
    assert model_fingerprint(a) != model_fingerprint(load_hf_entropy_model(d, max_seq_len=32))  # config
    assert model_fingerprint(a) != model_fingerprint(load_hf_entropy_model(d, specials="renormalize"))
    other = tiny_blt(seed=3)
    other.save_pretrained(tmp_path)
    assert model_fingerprint(a) != model_fingerprint(load_hf_entropy_model(str(tmp_path)))  # weights count
    # rebuilt from its own state dict (config inside), no HF folder needed
    state = a.state_dict()
    c = HFEntropyModel(a.config)
    c.load_state_dict(state)
    assert model_fingerprint(c) == model_fingerprint(a)
    np.testing.assert_array_equal(compute_entropies(c, DOC[:30]), compute_entropies(a, DOC[:30]))


def test_bare_patcher_folder(saved, tmp_path):
    hf, d = saved
    hf.model.patcher.save_pretrained(tmp_path)  # model_type "blt_patcher", unprefixed weights
    model = load_hf_entropy_model(str(tmp_path))
    assert model.config.hf_threshold is None
    np.testing.assert_allclose(compute_entropies(model, DOC[:60]), hf_entropies(hf, DOC[:60]), atol=1e-5)


def test_hub_name_from_local_cache(saved, tmp_path):
    """A hub name resolves through the Hugging Face cache without the network (a hand-made cache entry)."""
    hf, d = saved
    commit = "0" * 40
    repo = tmp_path / "models--tiny-org--tiny-blt"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(d, repo / "snapshots" / commit)
    model = load_hf_entropy_model("tiny-org/tiny-blt", cache_dir=str(tmp_path), local_files_only=True)
    np.testing.assert_allclose(compute_entropies(model, DOC[:40]), hf_entropies(hf, DOC[:40]), atol=1e-5)


def test_errors_are_one_line(tmp_path):
    cases = [str(tmp_path / "missing"),  # a path that does not exist: never the network
             str(tmp_path)]  # a folder without config.json
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "config.json").write_text('{"model_type": "gpt2"}')
    cases.append(str(tmp_path / "cfg"))
    for name in cases:
        with pytest.raises(CheckpointError) as e:
            load_entropy_model(f"hf:{name}")
        assert "\n" not in str(e.value) and name in str(e.value)
    # a hub name not in the local cache, without the network
    with pytest.raises(CheckpointError) as e:
        load_hf_entropy_model("no-such-user-xyz/no-such-blt-model", local_files_only=True)
    assert "\n" not in str(e.value) and "not in the Hugging Face cache" in str(e.value), str(e.value)


def test_repo_entropy_stream(saved):
    """entropy_llm.EntropyStream (generation's causal patching) gives compute_entropies' values."""
    _, d = saved
    model = load_hf_entropy_model(d, max_seq_len=16)
    doc = DOC[:40]  # windows every 8 bytes: the stream restarts its cache four times
    stream, got = EntropyStream(model), []
    for b in doc:
        got.append(stream.next_entropy())
        stream.push(b)
    np.testing.assert_allclose(np.array(got, dtype=np.float32), compute_entropies(model, doc), atol=1e-5)


def test_train_blt_patches_with_an_hf_entropy_model(saved):
    from byte_data import load_corpus
    from train_blt import is_hf, patch_config, prepare_dataset

    _, d = saved
    model = load_entropy_model(f"hf:{d}")
    docs = load_corpus("builtin", max_bytes=3_000)
    config = patch_config(method="global", entropy_threshold=None, target_patch_size=4.0, cache_patches=False)
    dataset = prepare_dataset(docs, config, model, f"hf:{d}")  # a random model: calibrated, not Meta's 1.335
    assert is_hf(f"hf:{d}") and dataset.entropy_fingerprint == model_fingerprint(model)
    lengths = np.concatenate(dataset.train_lengths)
    assert lengths.sum() == sum(map(len, dataset.train_docs)) and 2 < dataset.mean_patch_size < 8
    assert dataset.patching_flops_per_byte > 0
