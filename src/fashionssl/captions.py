"""Synthetic captions for Fashion-MNIST, a word-level tokeniser and the zero-shot class prompts.

Fashion-MNIST has no captions, so every caption here is generated from the image's **label**: a
template filled with one of the class's nouns and one or two of its attribute words, all drawn at
random. Nothing in a caption is read from the image itself, so a caption carries exactly the label
plus noise; CLIP trained on them is supervised learning through a text encoder, and every table that
shows it says that the captions derive from the labels.

Attribute words describe shape and style (sleeve length, neckline, heel, laces, handles), which a
28x28 grayscale image can show; there are no colours or materials, which it cannot. Some words are
shared between classes (long-sleeved: pullover, coat, shirt; zipped: coat, bag, ankle boot), as
they would be in real captions.

Zero-shot classification uses prompt templates different from the training templates (a classifier
is not handed a sentence it saw in training), made only of words the training captions contain, so
the tokeniser needs no unknown token for them; each class's prompts are encoded, L2-normalised,
averaged and renormalised (CLIP's prompt ensembling).
"""

import functools
import itertools
import re
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ClassDescription:
    name: str                    # the Fashion-MNIST label name
    nouns: tuple[str, ...]       # the first is the class name used in zero-shot prompts
    attributes: tuple[str, ...]  # shape and style words (grayscale: no colours)


CLASSES = (
    ClassDescription("T-shirt/top", ("t-shirt", "top", "tee"),
                     ("short-sleeved", "sleeveless", "crew-neck", "v-neck", "loose", "fitted", "cropped", "printed",
                      "plain", "casual")),
    ClassDescription("Trouser", ("pair of trousers", "pair of pants", "pair of jeans", "pair of slacks"),
                     ("long", "straight-leg", "wide-leg", "slim", "flared", "tapered", "high-waisted", "casual",
                      "formal")),
    ClassDescription("Pullover", ("pullover", "sweater", "jumper", "sweatshirt"),
                     ("long-sleeved", "knitted", "chunky", "round-neck", "loose", "cosy", "ribbed", "warm", "plain",
                      "casual")),
    ClassDescription("Dress", ("dress", "gown", "sundress"),
                     ("sleeveless", "knee-length", "long", "short", "flowing", "a-line", "fitted", "strapless",
                      "flared", "formal")),
    ClassDescription("Coat", ("coat", "jacket", "parka", "overcoat"),
                     ("long-sleeved", "buttoned", "zipped", "hooded", "heavy", "double-breasted", "belted", "warm",
                      "long", "padded")),
    ClassDescription("Sandal", ("sandal", "flip-flop", "slide", "strap sandal"),
                     ("open-toe", "strappy", "flat", "heeled", "summer", "low", "buckled", "open")),
    ClassDescription("Shirt", ("shirt", "blouse", "button-up"),
                     ("collared", "button-down", "long-sleeved", "short-sleeved", "checked", "striped", "formal",
                      "fitted", "loose", "plain")),
    ClassDescription("Sneaker", ("sneaker", "trainer", "running shoe", "sports shoe"),
                     ("low-top", "laced", "sporty", "rubber-soled", "athletic", "casual", "flat", "padded")),
    ClassDescription("Bag", ("bag", "handbag", "purse", "tote", "backpack"),
                     ("handled", "rectangular", "shoulder", "zipped", "structured", "small", "large", "buckled")),
    ClassDescription("Ankle boot", ("ankle boot", "boot", "bootie"),
                     ("heeled", "laced", "zipped", "chunky", "flat", "high", "pointed", "buckled", "padded")),
)

# Training captions: {n} a noun, {a} and {b} two different attribute words of the caption's class.
CAPTION_TEMPLATES = (
    "a {a} {n}",
    "the {a} {n}",
    "a {a} {b} {n}",
    "a {n} that is {a}",
    "a {n} that is {a} and {b}",
    "an image of a {a} {n}",
    "a grayscale photo of the {a} {n}",
    "product photo of a {n}",
    "this {n} is {a}",
    "a {a} {n} on a dark background",
)

# Zero-shot prompts: {n} the class name (its first noun). None is a training template.
PROMPT_TEMPLATES = (
    "a photo of a {n}",
    "an image of the {n}",
    "a grayscale photo of a {n}",
    "a {n}",
    "this is a {n}",
)

PAD, UNK = "<pad>", "<unk>"


def fill(template: str, noun: str, a: str = "", b: str = "") -> str:
    """A template filled in, with "a" turned into "an" before a vowel."""
    return re.sub(r"\ba (?=[aeiou])", "an ", template.format(n=noun, a=a, b=b))


def caption_words() -> list[str]:
    """Every word the training captions can contain, sorted."""
    words = {w for t in CAPTION_TEMPLATES for w in t.replace("{a}", "").replace("{b}", "").replace("{n}", "").split()}
    words |= {"an"}  # from fill's article rule
    for c in CLASSES:
        words |= {w for text in c.nouns + c.attributes for w in text.split()}
    return sorted(words)


VOCAB = (PAD, UNK, *caption_words())  # fixed: the same ids on every machine and in every run
WORD_IDS = {w: i for i, w in enumerate(VOCAB)}


def tokenize(texts: list[str], length: int) -> torch.Tensor:
    """Lower-cased, whitespace-split word ids, right-padded with <pad> (id 0) to `length`: (N, length)."""
    tokens = torch.zeros(len(texts), length, dtype=torch.long)
    for row, text in enumerate(texts):
        ids = [WORD_IDS.get(w, WORD_IDS[UNK]) for w in text.lower().split()]
        if len(ids) > length:
            raise ValueError(f"{text!r} has {len(ids)} words, more than {length}")
        tokens[row, :len(ids)] = torch.tensor(ids, dtype=torch.long)
    return tokens


def detokenize(tokens: torch.Tensor) -> list[str]:
    """The texts of (N, L) token ids, <pad> dropped."""
    return [" ".join(VOCAB[i] for i in row if i != 0) for row in tokens.tolist()]


@functools.lru_cache(maxsize=1)
def caption_texts() -> dict[tuple[int, int, int, int, int], str]:
    """Every training caption, keyed by (class, template, noun, attribute a, attribute b) indices, a != b."""
    texts = {}
    for c, desc in enumerate(CLASSES):
        attrs = range(len(desc.attributes))
        for (t, template), (n, noun) in itertools.product(enumerate(CAPTION_TEMPLATES), enumerate(desc.nouns)):
            for a, b in itertools.permutations(attrs, 2):
                texts[c, t, n, a, b] = fill(template, noun, desc.attributes[a], desc.attributes[b])
    return texts


@functools.lru_cache(maxsize=1)
def caption_table() -> torch.Tensor:
    """The tokenised captions as a (class, template, noun, attribute a, attribute b, word) table; its
    last size is the longest caption's length. Entries no caption fills (a class with fewer nouns or
    attributes than the largest, or a == b) stay <pad> and are never drawn."""
    texts = caption_texts()
    length = max(len(text.split()) for text in texts.values())
    shape = (len(CLASSES), len(CAPTION_TEMPLATES), max(len(c.nouns) for c in CLASSES),
             max(len(c.attributes) for c in CLASSES))
    table = torch.zeros(*shape, shape[-1], length, dtype=torch.long)
    table[tuple(torch.tensor(list(texts)).T)] = tokenize(list(texts.values()), length)
    return table


def prompts() -> list[list[str]]:
    """The zero-shot prompts of each class: every prompt template with the class name."""
    return [[fill(t, c.nouns[0]) for t in PROMPT_TEMPLATES] for c in CLASSES]


class CaptionSampler(nn.Module):
    """Random captions for a batch of labels by tensor indexing, no per-image Python.

    All captions are tokenised once into a table indexed by (class, template, noun, attribute a,
    attribute b); a caption is drawn by picking, for each image, a template uniformly, one of its
    class's nouns uniformly and two different attribute words uniformly. The table is a
    non-persistent buffer: it moves with the model but is rebuilt from this file, not saved.
    """

    def __init__(self):
        super().__init__()
        self.register_buffer("table", caption_table().clone(), persistent=False)
        self.register_buffer("num_nouns", torch.tensor([len(c.nouns) for c in CLASSES]), persistent=False)
        self.register_buffer("num_attributes", torch.tensor([len(c.attributes) for c in CLASSES]), persistent=False)

    def forward(self, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """(B,) labels -> (B, L) token ids, all randomness from `generator`."""
        # Uniform integers below each count as a large random integer modulo the count (the bias,
        # under 1e-17, is far below anything measurable).
        r = torch.randint(0, 2**62, (4, len(labels)), generator=generator, device=labels.device)
        num_attributes = self.num_attributes[labels]
        template = r[0] % len(CAPTION_TEMPLATES)
        noun = r[1] % self.num_nouns[labels]
        a = r[2] % num_attributes
        b = (a + 1 + r[3] % (num_attributes - 1)) % num_attributes  # uniform over the other attributes
        return self.table[labels, template, noun, a, b]
