"""XRTransformer and the encoder helper on a tiny random BERT (no download needed)."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from sklearn.exceptions import NotFittedError  # noqa: E402

from xmrrs import XRLinearClassifier  # noqa: E402
from xmrrs.encoders import encode  # noqa: E402
from xmrrs.hybrid import HybridMatrix  # noqa: E402
from xmrrs.text import TfidfVectorizer  # noqa: E402
from xmrrs.xtransformer import XRTransformer, ranker_features  # noqa: E402

N_LABELS = 24


def _data(n: int, seed: int) -> tuple[list[str], list[list[str]]]:
    """Texts whose words name their labels: each label has two signature words."""
    rng = random.Random(seed)
    noise = [f"noise{i}" for i in range(30)]
    texts, labels = [], []
    for _ in range(n):
        tags = sorted(rng.sample(range(N_LABELS), rng.randint(1, 2)))
        words = [f"w{t}{s}" for t in tags for s in "ab" for _ in range(2)]
        words += rng.sample(noise, 4)
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append([f"tag{t}" for t in tags])
    return texts, labels


TRAIN = _data(240, 0)
TEST = _data(60, 1)


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random BERT (hidden 32) and a WordPiece tokenizer trained on the texts."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    d = tmp_path_factory.mktemp("tiny-bert")
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(
        TRAIN[0], trainers.WordPieceTrainer(vocab_size=300, special_tokens=specials)
    )
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))],
    )
    PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    ).save_pretrained(d)
    config = BertConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(d)
    return d


def _xt(enc: Path, **kw: Any) -> XRTransformer:
    params: dict[str, Any] = dict(
        max_length=32,
        epochs=3,
        batch_size=16,
        learning_rate=1e-3,
        head_learning_rate=1e-2,
        branching=3,
        max_leaf_size=4,
        shortlist_size=2,
        device="cpu",
        random_state=0,
        n_jobs=1,
    )
    params.update(kw)
    return XRTransformer(enc, **params)


@pytest.fixture(scope="module")
def fitted(tiny_bert: Path) -> XRTransformer:
    return _xt(tiny_bert, levels=[1, 2, 3]).fit(*TRAIN)


def test_finetuning_lowers_the_loss_at_every_level(fitted: XRTransformer) -> None:
    assert fitted.levels_ == [1, 2, 3]  # 3 clusters, 6 leaves, then the 24 labels
    assert fitted.tree_.n_nodes_per_level == [1, 3, 6]
    assert len(fitted.stage_losses_) == 3
    for level, losses in zip(fitted.levels_, fitted.stage_losses_, strict=True):
        assert len(losses) == 3
        assert losses[-1] < losses[0], (level, losses)
    assert {"tfidf", "tree", "stage_1", "stage_2", "stage_3", "embed", "ranker"} <= set(
        fitted.fit_times_
    )
    # the fitted pipeline ranks the held-out texts' labels well
    assert fitted.score(*TEST) > 0.8
    ids, scores = fitted.predict_topk(TEST[0], k=3)
    assert ids.shape == scores.shape == (60, 3) and ids.dtype == np.int64
    assert fitted.predict(TEST[0]).shape == (60, N_LABELS)
    assert len(fitted.predict_labels(TEST[0][:2], k=2)[0]) == 2


def test_fine_tuning_changes_the_embeddings(tiny_bert: Path, fitted: XRTransformer) -> None:
    frozen = encode(TEST[0], tiny_bert, max_length=32, device="cpu")
    assert not np.allclose(fitted.embed(TEST[0]), frozen, atol=1e-3)


def test_save_load_gives_identical_predictions(fitted: XRTransformer, tmp_path: Path) -> None:
    fitted.save(tmp_path / "m")
    files = {p.name for p in (tmp_path / "m").rglob("*") if p.is_file()}
    assert "model.safetensors" in files and "tokenizer.json" in files
    assert not any(f.endswith((".bin", ".pkl", ".pt")) for f in files)
    loaded = XRTransformer.load(tmp_path / "m")
    a, b = fitted.predict_topk(TEST[0], k=5), loaded.predict_topk(TEST[0], k=5)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert loaded.stage_losses_ == fitted.stage_losses_
    assert list(loaded.classes_) == list(fitted.classes_)
    assert loaded.get_params()["max_leaf_size"] == 4
    fitted.save(tmp_path / "m")  # replacing a saved model works
    fitted.ranker_.save(tmp_path / "plain")
    with pytest.raises(ValueError, match=r"not an xmrrs\.XRTransformer"):
        XRTransformer.load(tmp_path / "plain")


def test_same_seed_same_model_on_cpu(tiny_bert: Path) -> None:
    runs = [_xt(tiny_bert, epochs=1).fit(*TRAIN) for _ in range(2)]
    a, b = (r.predict_topk(TEST[0], k=5) for r in runs)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert runs[0].stage_losses_ == runs[1].stage_losses_
    other = _xt(tiny_bert, epochs=1, random_state=1).fit(*TRAIN)
    assert other.stage_losses_ != runs[0].stage_losses_


def test_frozen_encoder_equals_encoding_then_xr_linear(tiny_bert: Path) -> None:
    xt = _xt(tiny_bert, epochs=0, embedding_weight=0.5).fit(*TRAIN)
    assert xt.stage_losses_ == [[], [], []]  # levels 1, 2 and the labels
    tfidf = TfidfVectorizer(sublinear_tf=True, min_df=2)
    Xtr = tfidf.fit_transform(TRAIN[0])
    Etr = encode(TRAIN[0], tiny_bert, max_length=32, batch_size=64, device="cpu")
    ref = XRLinearClassifier(random_state=0, n_jobs=1)
    ref.fit(ranker_features(Xtr, Etr, 0.5), TRAIN[1])
    Ete = encode(TEST[0], tiny_bert, max_length=32, device="cpu")
    want = ref.predict_topk(ranker_features(tfidf.transform(TEST[0]), Ete, 0.5), k=5)
    got = xt.predict_topk(TEST[0], k=5)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1], rtol=1e-5)


def test_embedding_components_rotate_the_embeddings(tiny_bert: Path, tmp_path: Path) -> None:
    """``embedding_components=k``: the ranker's dense block is the embeddings on their first
    k principal axes (frozen: encoding, rotating, then XR-Linear on the concatenation); the
    axes are saved (safetensors) and the loaded model answers the same."""
    from xmrrs.xtransformer import principal_axes

    xt = _xt(tiny_bert, epochs=0, embedding_components=5).fit(*TRAIN)
    assert xt.axes_.shape == (32, 5) and xt.ranker_.models_[0].n_dense == 5
    tfidf = TfidfVectorizer(sublinear_tf=True, min_df=2)
    Xtr = tfidf.fit_transform(TRAIN[0])
    Etr = encode(TRAIN[0], tiny_bert, max_length=32, batch_size=64, device="cpu")
    axes = principal_axes(Etr, 5, 0)
    np.testing.assert_allclose(np.abs(axes), np.abs(xt.axes_), atol=1e-5)
    # orthonormal columns, the largest eigenvalues first
    np.testing.assert_allclose(axes.T @ axes, np.eye(5), atol=1e-5)
    energy = np.linalg.norm(Etr @ principal_axes(Etr, 32, 0), axis=0)
    assert np.all(np.diff(energy) <= 1e-4)
    ref = XRLinearClassifier(random_state=0, n_jobs=1)
    ref.fit(ranker_features(Xtr, Etr @ xt.axes_, 1.0), TRAIN[1])
    Ete = encode(TEST[0], tiny_bert, max_length=32, device="cpu")
    want = ref.predict_topk(ranker_features(tfidf.transform(TEST[0]), Ete @ xt.axes_), k=5)
    got = xt.predict_topk(TEST[0], k=5)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1], rtol=1e-5)
    xt.save(tmp_path / "m")
    loaded = XRTransformer.load(tmp_path / "m")
    np.testing.assert_array_equal(loaded.axes_, xt.axes_)
    b = loaded.predict_topk(TEST[0], k=5)
    np.testing.assert_array_equal(b[0], got[0])
    np.testing.assert_array_equal(b[1], got[1])
    # a corrupt axes file is named in the error
    (axes_file,) = (tmp_path / "m").glob("projection-*/axes.safetensors")
    axes_file.write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="principal axes"):
        XRTransformer.load(tmp_path / "m")
    with pytest.raises(ValueError, match="hidden size 32"):
        _xt(tiny_bert, epochs=0, embedding_components=33).fit(*TRAIN)
    with pytest.raises(ValueError, match="embedding_components"):
        _xt(tiny_bert, epochs=0, embedding_components=0).fit(*TRAIN)


def test_fully_frozen_encoder_trains_only_the_heads(tiny_bert: Path) -> None:
    from transformers import AutoModel

    xt = _xt(tiny_bert, epochs=2, freeze_layers=99).fit(*TRAIN)
    assert all(len(v) == 2 for v in xt.stage_losses_)
    before = AutoModel.from_pretrained(tiny_bert).state_dict()
    for name, value in xt.encoder_.state_dict().items():
        assert torch.equal(value, before[name]), name


def test_ranker_features_are_tfidf_then_scaled_embeddings() -> None:
    X = sp.csr_matrix(np.array([[0.6, 0.0, 0.8], [0.0, 1.0, 0.0]]))
    E = np.array([[1.0, 0.0], [0.6, 0.8]], dtype=np.float32)
    F = ranker_features(X, E, 0.5)
    assert isinstance(F, HybridMatrix) and (F.n_sparse, F.n_dense) == (3, 2)
    assert F.dense.dtype == np.float32 and F.dense.flags.c_contiguous
    np.testing.assert_allclose(F.tocsr().toarray(), np.hstack([X.toarray(), 0.5 * E]))


def test_encode_pooling_and_normalisation(tiny_bert: Path) -> None:
    mean = encode(TEST[0][:5], tiny_bert, device="cpu", batch_size=2)
    assert mean.shape == (5, 32) and mean.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(mean, axis=1), 1.0, rtol=1e-5)
    raw = encode(TEST[0][:5], tiny_bert, device="cpu", normalize=False, pooling="cls")
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)
    # padding does not change a text's embedding (batched with longer texts or alone)
    alone = encode(TEST[0][:1], tiny_bert, device="cpu")
    np.testing.assert_allclose(alone[0], mean[0], atol=1e-5)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"pooling": "max"}, "pooling"),
        ({"epochs": -1}, "epochs"),
        ({"epochs": [1, 1, 1, 1]}, "epochs has 4 entries"),
        ({"negatives": "all"}, "negatives"),
        ({"levels": [4]}, "levels must lie in"),
        ({"levels": [2, 1]}, "strictly increasing"),
        ({"max_length": 0}, "max_length"),
        ({"learning_rate": float("nan")}, "learning_rate"),
        ({"device": "tpu"}, "device"),
        ({"random_state": -3}, "random_state"),
    ],
)
def test_bad_params_raise(tiny_bert: Path, kw: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _xt(tiny_bert, epochs=kw.pop("epochs", 0), **kw).fit(*TRAIN)


def test_bad_inputs_raise(tiny_bert: Path, fitted: XRTransformer) -> None:
    with pytest.raises(ValueError, match="encoder"):
        XRTransformer().fit(*TRAIN)
    xt = _xt(tiny_bert, epochs=0)
    with pytest.raises(ValueError, match="240 items but Y has 239"):
        xt.fit(TRAIN[0], TRAIN[1][:-1])
    with pytest.raises(ValueError, match="empty"):
        xt.fit([], [])
    with pytest.raises(ValueError, match="single string"):
        xt.fit("one text", [["a"]])
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        xt.fit(["a text", 3], [["a"], ["b"]])
    with pytest.raises(NotFittedError):
        xt.predict_topk(["a text"])
    with pytest.raises(ValueError, match="empty"):
        fitted.predict_topk([])
    with pytest.raises(ValueError, match="device"):
        encode(["a"], tiny_bert, device="gpu")


def test_import_xmrrs_loads_no_torch() -> None:
    code = (
        "import sys, xmrrs, xmrrs.xtransformer, xmrrs.encoders; xmrrs.XRTransformer; "
        "print(sorted(m for m in sys.modules "
        "if m.split('.')[0] in ('torch', 'transformers', 'tokenizers')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
