"""Tests for CLIP: caption generation (determinism, variety, class content; Fashion-MNIST's captions
pinned bit for bit, known answers for any other classes), the tokeniser, clip_loss
(a hand-computed case, symmetry, the two-rank split), the zero-shot classifier on a toy embedding,
caption replay from the step counter, and a short real run that beats the untrained encoder on kNN
and classifies zero-shot far above chance."""

from __future__ import annotations

import hashlib
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fashionssl import captions, losses
from fashionssl.data import FASHION_MNIST_CLASSES, FASHION_MNIST_INFO
from fashionssl.captions import (FASHION_MNIST, GENERIC_PROMPTS, GENERIC_TEMPLATES, UNK, CaptionSampler,
                                 caption_set)
from fashionssl.checkpoint import load_checkpoint
from fashionssl.config import Config
from fashionssl.encoders import ConvNet, build_encoder
from fashionssl.errors import UserError
from fashionssl.evaluate import results_table
from fashionssl.probe import accuracy, extract_features, knn_predict
from fashionssl.losses import clip_loss
from fashionssl.methods import build_method, build_model
from fashionssl.methods.clip import MAX_LOGIT_SCALE

pytestmark = pytest.mark.usefixtures("single_thread")


FASHION = caption_set(FASHION_MNIST_CLASSES)
SHAPES = ("circle", "Big  Square", "stripes")  # any other data's class names, one with two words


def make(seed: int = 0, class_names=FASHION_MNIST_CLASSES, **options):
    torch.manual_seed(seed)
    return build_method("clip", ConvNet(batch_norm=True, fc_dim=None), options, class_names)


def class_captions(captions=FASHION) -> list[set[str]]:
    """Every caption the generator can produce, per class."""
    per_class = [set() for _ in captions.descriptions]
    for (c, *_), text in captions.texts.items():
        per_class[c].add(text)
    return per_class


def sha256(x) -> str:
    return hashlib.sha256(x.numpy().tobytes() if isinstance(x, torch.Tensor) else "\n".join(x).encode()).hexdigest()


# ---------------------------------------------------------------- captions and tokeniser

def test_fashion_mnist_captions_replay_bit_for_bit():
    """Fashion-MNIST's vocabulary, caption table and draws are those of every run before captions
    were generated for any class names (values captured from that code), so its runs replay."""
    assert FASHION.descriptions == FASHION_MNIST and tuple(c.name for c in FASHION_MNIST) == FASHION_MNIST_CLASSES
    assert len(FASHION.vocab) == 118 and FASHION.vocab[:6] == ("<pad>", "<unk>", "a", "a-line", "an", "and")
    assert sha256(FASHION.vocab) == "083368a010e6fa8a627ea9a009cfb33748ea43d530ef835354e09cba7c3a179c"
    assert FASHION.table.shape == (10, 10, 5, 10, 10, 9) and len(FASHION.texts) == 27620
    assert sha256(FASHION.table) == "6bdce7d0d35445ce58895a593cd4da1a477f03631bf051418087b37b24f45c4d"
    assert FASHION.prompts()[0] == ["a photo of a t-shirt", "an image of the t-shirt", "a grayscale photo of a t-shirt",
                                    "a t-shirt", "this is a t-shirt"]
    labels = torch.arange(10).repeat(30)
    drawn = CaptionSampler(FASHION)(labels, torch.Generator().manual_seed(0))
    assert sha256(drawn) == "81f8d9bea3e0c77fac4e6896a7ea6cae482ab88900c1c4da40e0a83fbee94e3c"
    assert FASHION.detokenize(drawn[:10]) == [
        "an image of a loose top", "a formal pair of slacks", "a round-neck sweatshirt on a dark background",
        "product photo of a gown", "the belted coat", "a strap sandal that is buckled and summer",
        "the button-down blouse", "an athletic sporty running shoe", "a shoulder buckled purse",
        "an ankle boot that is high"]
    model = make(seed=0)  # the seed drawn after the same initialisation, and the captions of two steps
    assert model.caption_seed.item() == 751301630266813853 and model.text_encoder.embedding.num_embeddings == 118
    assert sha256(model.sample_captions(labels)) == "105dbdabc67e1d19da745d334f186cf1d1dfc02d31e2229d82f43a228b84640f"
    model.after_step(6, 10)
    assert sha256(model.sample_captions(labels)) == "c23c572e11e0f6ba8a00969f1de5536cb8e5224db1869a70eebaaa2e3e2d42da"


def test_other_classes_get_their_names_in_generic_templates():
    shapes = caption_set(SHAPES)
    assert [(c.name, c.nouns, c.attributes) for c in shapes.descriptions] == [
        ("circle", ("circle",), ()), ("Big  Square", ("big square",), ()), ("stripes", ("stripes",), ())]
    assert shapes.vocab == ("<pad>", "<unk>", "a", "an", "big", "circle", "example", "image", "is", "of", "one",
                            "photo", "picture", "small", "square", "stripes", "the", "this")
    assert [text for (c, *_), text in shapes.texts.items() if c == 1] == [
        "the big square", "one big square", "a photo of the big square", "an image of a big square",
        "a picture of a big square", "this is the big square", "an example of a big square",
        "a small image of the big square"]
    assert shapes.prompts()[1] == ["a photo of a big square", "an image of the big square",
                                   "a picture of the big square", "a big square", "this is a big square"]
    assert shapes.length == 7 and shapes.table.shape == (3, 8, 1, 1, 1, 7)
    assert shapes.detokenize(shapes.table[1, :, 0, 0, 0]) == [text for (c, *_), text in shapes.texts.items() if c == 1]
    assert caption_set(("0", "1")).prompts()[1][0] == "a photo of a 1"
    assert caption_set(("apple", "pear")).texts[0, 4, 0, 0, 0] == "a picture of an apple"


def test_the_vocabulary_follows_the_class_names():
    letters = caption_set(tuple("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
    assert len(letters.vocab) == 14 + 25  # <pad>, <unk>, the templates' 12 words, and the letters but a
    model = make(class_names=SHAPES, embed_dim=16)
    assert model.text_encoder.embedding.num_embeddings == 18 and model.class_embeddings().shape == (3, 16)
    assert make(class_names=FASHION_MNIST_CLASSES[:9]).caption_set.templates == GENERIC_TEMPLATES


def test_other_classes_sampled_captions_are_their_own_and_use_every_template():
    shapes, per_class = caption_set(SHAPES), class_captions(caption_set(SHAPES))
    labels = torch.arange(3).repeat_interleave(200)
    texts = shapes.detokenize(CaptionSampler(shapes)(labels, torch.Generator().manual_seed(0)))
    for label, text in zip(labels.tolist(), texts):
        assert text in per_class[label], (label, text)
    assert all(set(texts[200 * c:200 * (c + 1)]) == per_class[c] for c in range(3))


def test_other_classes_prompts_are_not_training_templates_and_need_no_unknown_token():
    assert not set(GENERIC_PROMPTS) & set(GENERIC_TEMPLATES)
    shapes = caption_set(SHAPES)
    assert (shapes.tokenize([p for ps in shapes.prompts() for p in ps], shapes.length) != shapes.word_ids[UNK]).all()


def test_class_names_that_read_alike_are_refused():
    with pytest.raises(UserError, match="classes 'Cat' and 'cat ' both read 'cat'; rename one of them"):
        caption_set(("Cat", "dog", "cat "))


def test_captions_are_deterministic_for_a_seed_and_vary_across_seeds():
    sampler = CaptionSampler(FASHION)
    labels = torch.arange(10).repeat(20)
    first = sampler(labels, torch.Generator().manual_seed(3))
    assert torch.equal(first, sampler(labels, torch.Generator().manual_seed(3)))
    assert not torch.equal(first, sampler(labels, torch.Generator().manual_seed(4)))


def test_sampled_captions_belong_to_their_class_and_vary():
    sampler, per_class = CaptionSampler(FASHION), class_captions()
    labels = torch.arange(10).repeat_interleave(300)
    texts = FASHION.detokenize(sampler(labels, torch.Generator().manual_seed(0)))
    for label, text in zip(labels.tolist(), texts):
        assert text in per_class[label], (label, text)
    for c, desc in enumerate(FASHION_MNIST):
        drawn = texts[300 * c:300 * (c + 1)]
        assert len(set(drawn)) > 150  # varied: hundreds of distinct captions per class
        words = " ".join(drawn).split()
        assert set(desc.attributes) <= set(words)  # every attribute word and noun is drawn
        assert all(noun in " ".join(drawn) for noun in desc.nouns)


def test_every_class_word_is_in_the_vocabulary_and_prompts_need_no_unknown_token():
    assert FASHION.vocab[:2] == ("<pad>", UNK) and len(set(FASHION.vocab)) == len(FASHION.vocab)
    for desc in FASHION_MNIST:
        assert all(w in FASHION.word_ids for text in desc.nouns + desc.attributes for w in text.split())
    all_prompts = [p for ps in FASHION.prompts() for p in ps]
    assert len(all_prompts) == len(FASHION_MNIST) * len(FASHION.prompt_templates)
    assert (FASHION.tokenize(all_prompts, 9) != FASHION.word_ids[UNK]).all()
    assert not set(FASHION.prompt_templates) & set(FASHION.templates)  # zero-shot prompts are not training templates


def test_tokeniser_round_trip_padding_and_unknown_words():
    texts = ["a photo of an ankle boot", "the sneaker", "A Flowing DRESS"]
    tokens = FASHION.tokenize(texts, 7)
    assert tokens.shape == (3, 7) and tokens.dtype == torch.long
    assert tokens[1, 2:].eq(0).all()  # right-padded with <pad> = 0
    assert FASHION.detokenize(tokens) == ["a photo of an ankle boot", "the sneaker", "a flowing dress"]
    assert FASHION.detokenize(FASHION.tokenize(["a purple dress"], 4)) == ["a <unk> dress"]
    with pytest.raises(ValueError, match="more than 2"):
        FASHION.tokenize(["one two three"], 2)


def test_articles_follow_the_next_word():
    assert captions.fill("a {a} {n}", "boot", "open-toe") == "an open-toe boot"
    assert captions.fill("a {n} that is {a}", "ankle boot", "laced") == "an ankle boot that is laced"
    assert captions.fill("a {a} {n}", "tote", "large") == "a large tote"


# ---------------------------------------------------------------- clip_loss

def test_clip_loss_hand_computed_2x2():
    # images (1, 0), (0, 1); texts (1, 0), (1, 1)/sqrt(2); scale 2, c = 1/sqrt(2).
    # image->text logits 2*[1, c], 2*[0, c]; text->image 2*[1, 0], 2*[c, c]; targets: the diagonal.
    image, text = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[3.0, 0.0], [1.0, 1.0]])
    c = 1 / math.sqrt(2)
    image_to_text = (math.log(1 + math.exp(2 * c - 2)) + math.log(1 + math.exp(-2 * c))) / 2
    text_to_image = (math.log(1 + math.exp(-2)) + math.log(2)) / 2
    expected = (image_to_text + text_to_image) / 2
    assert expected == pytest.approx(0.370061, abs=1e-6)  # by calculator
    assert clip_loss(image, text, 2.0).item() == pytest.approx(expected, rel=1e-6)


def test_clip_loss_is_symmetric_and_scale_invariant_in_inputs():
    g = torch.Generator().manual_seed(0)
    image, text = torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g)
    loss = clip_loss(image, text, 10.0)
    torch.testing.assert_close(clip_loss(text, image, 10.0), loss)
    torch.testing.assert_close(clip_loss(3 * image, 0.5 * text, 10.0), loss)  # embeddings are normalised
    perm = torch.randperm(8, generator=g)
    torch.testing.assert_close(clip_loss(image[perm], text[perm], 10.0), loss)  # pair order is irrelevant
    assert clip_loss(image, text[perm], 10.0).item() != pytest.approx(loss.item())  # but pairing matters


def test_clip_loss_two_ranks_average_to_the_global_batch_loss(monkeypatch):
    """Each rank's local loss against the gathered batch; their mean is the single-process loss of
    the whole batch (what DDP's gradient averaging then optimises)."""
    g = torch.Generator().manual_seed(1)
    image, text = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    full = {"image": F.normalize(image, dim=1), "text": F.normalize(text, dim=1)}
    local_losses = []
    for r in range(2):
        part = slice(3 * r, 3 * r + 3)

        def gather(x, r=r, part=part):  # what all_gather returns on rank r: its own slice in place
            name = "image" if torch.allclose(x, full["image"][part]) else "text"
            return torch.cat([x if k == r else full[name][3 * k:3 * k + 3] for k in range(2)])

        monkeypatch.setattr(losses, "gather_with_grad", gather)
        monkeypatch.setattr(losses, "rank", lambda r=r: r)
        local_losses.append(clip_loss(image[part], text[part], 5.0))
    monkeypatch.undo()
    torch.testing.assert_close(sum(local_losses) / 2, clip_loss(image, text, 5.0))


# ---------------------------------------------------------------- the method

class ToyText(nn.Module):
    """A text encoder that maps a prompt to the one-hot vector of the class whose name's last word it
    contains, plus a template-dependent vector shared by every class (which ensembling averages)."""

    def __init__(self):
        super().__init__()
        weights = 0.05 * torch.randn(len(FASHION.vocab), 10, generator=torch.Generator().manual_seed(0))
        weights[0] = 0  # padding
        for c, desc in enumerate(FASHION_MNIST):
            weights[FASHION.word_ids[desc.nouns[0].split()[-1]]] = F.one_hot(torch.tensor(c), 10).float()
        self.register_buffer("weights", weights)

    def forward(self, tokens):
        return F.one_hot(tokens, len(FASHION.vocab)).float().sum(1) @ self.weights


def test_zero_shot_classifier_on_a_toy_embedding():
    model = make(embed_dim=10)
    model.image_projector, model.text_encoder = nn.Identity(), ToyText()
    classes = model.class_embeddings()
    assert classes.shape == (10, 10)
    torch.testing.assert_close(classes.norm(dim=1), torch.ones(10))
    # the ensemble by hand for one class: normalise each prompt's embedding, average, renormalise
    own = F.normalize(model.text_encoder(FASHION.tokenize(FASHION.prompts()[9], 9)), dim=1)
    torch.testing.assert_close(classes[9], F.normalize(own.mean(0), dim=0))
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 10, (200,), generator=g)
    features = F.one_hot(labels, 10).float() + 0.1 * torch.randn(200, 10, generator=g)
    assert (model.zero_shot_logits(features).argmax(1) == labels).all()
    results = model.extra_evaluation({"train": (features, labels), "val": (features, labels),
                                      "test": (features, labels.roll(1))})
    assert results["zero_shot_val_acc"] == 1.0 and results["zero_shot_test_acc"] < 0.3
    assert "captions derive from labels" in results["zero_shot_protocol"]


def test_captions_replay_from_the_saved_step_and_seed():
    model, labels = make(seed=0), torch.arange(10).repeat(3)
    first = model.sample_captions(labels)
    assert torch.equal(first, model.sample_captions(labels))  # a function of the state, not global RNG
    model.after_step(4, 10)
    assert model.step.item() == 5 and not torch.equal(first, model.sample_captions(labels))
    resumed = make(seed=1)
    assert not torch.equal(resumed.caption_seed, model.caption_seed)  # the seed comes from cfg.seed's RNG
    resumed.sample_captions(labels)  # the host's copy of its own counters, which loading must replace
    resumed.load_state_dict(model.state_dict())
    assert torch.equal(resumed.sample_captions(labels), model.sample_captions(labels))


def test_logit_scale_is_learnt_and_capped_at_100():
    model = make(temperature=0.07)
    assert model.logit_scale.exp().item() == pytest.approx(1 / 0.07)
    views, labels = [torch.randn(8, 1, 28, 28)], torch.arange(8)
    loss, logs = model(views, labels)
    loss.backward()
    assert model.logit_scale.grad is not None and logs["logit_scale"].item() == pytest.approx(1 / 0.07)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(500))
    model.after_step(0, 10)
    assert model.logit_scale.exp().item() == pytest.approx(MAX_LOGIT_SCALE)
    assert model.uses_labels and model.view_spec.global_views == 1 and model.view_spec.local_views == 0


@pytest.mark.parametrize("option, value", [("temperature", 0), ("temperature", 0.001), ("embed_dim", 0),
                                           ("text_width", 1.5), ("hidden_dim", "512")])
def test_bad_option_names_the_option(option, value):
    with pytest.raises(UserError, match=f"clip option {option} must be"):
        make(**{option: value})


def test_results_table_says_captions_derive_from_labels():
    table = results_table({"method": "clip", "encoder": "cnn-bn", "uses_labels": True,
                           "label_use": "captions derive from labels", "linear_probe_test_acc": 0.9,
                           "linear_probe_weight_decay": 1e-4, "linear_probe_val_acc": 0.9, "knn_test_acc": 0.85,
                           "zero_shot_test_acc": 0.8125, "eval_seconds": 1.0})
    assert "clip / cnn-bn (captions derive from labels)" in table and "81.25%" in table


# ---------------------------------------------------------------- a short real run

# As in test_methods.py: 2048 images, 3 epochs of batch 64 (96 steps), milder crops; kNN on 1000
# validation images with the 2048 training images as the bank. Measured on a 2-core CPU: kNN
# untrained 0.709, trained 0.756; zero-shot accuracy on validation 0.734 (about 10 s of CPU time).
RUN = dict(method="clip", encoder="cnn-bn", epochs=3, batch_size=64, train_subset=2048, val_size=1000, knn_every=0,
           augment_options={"crop_scale": [0.5, 1.0]}, seed=0)


def test_short_run_beats_untrained_backbone_and_classifies_zero_shot(tmp_path):
    from fashionssl.augment import make_config
    from fashionssl.data import load_dataset
    from fashionssl.train import pretrain

    data = load_dataset(None, RUN["val_size"], train_subset=RUN["train_subset"])
    aug, cpu = make_config("default"), torch.device("cpu")

    def features(backbone):
        return [extract_features(backbone, s.images, aug, cpu) for s in (data.train, data.val)]

    torch.manual_seed(RUN["seed"])
    untrained_bank, untrained_val = features(build_encoder(RUN["encoder"]))
    untrained = accuracy(knn_predict(untrained_bank, data.train.labels, untrained_val), data.val.labels)
    cfg = Config(out=str(tmp_path / "run"), **RUN)
    run_dir = pretrain(cfg)
    epochs = [e for e in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if "epoch_loss" in e]
    assert epochs[-1]["epoch_loss"] < epochs[0]["epoch_loss"]
    model = build_model(cfg, FASHION_MNIST_INFO)
    model.load_state_dict(load_checkpoint(run_dir)["model"])
    bank, val = features(model.backbone)
    trained = accuracy(knn_predict(bank, data.train.labels, val), data.val.labels)
    zero_shot = model.extra_evaluation({"val": (val, data.val.labels)})["zero_shot_val_acc"]
    print(f"clip: kNN val accuracy untrained {untrained:.3f}, trained {trained:.3f}; zero-shot {zero_shot:.3f}")
    assert trained > untrained + 0.01
    assert zero_shot > 0.4  # chance is 0.1
