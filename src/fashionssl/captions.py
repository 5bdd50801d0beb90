"""Synthetic captions generated from class labels, a word-level tokeniser and the zero-shot prompts.

Images here come without captions, so every caption is generated from the image's **label**: a
template filled with one of the class's nouns (and, for Fashion-MNIST, one or two of its attribute
words), all drawn at random. Nothing in a caption is read from the image itself, so a caption carries
exactly the label plus noise; CLIP trained on them is supervised learning through a text encoder, and
every table that shows it says that the captions derive from the labels.

Two sets of descriptions (`caption_set` picks one from the data's class names):
- Fashion-MNIST's classes get hand-written ones: several nouns and attribute words per class. The
  attributes describe shape and style (sleeve length, neckline, heel, laces, handles), which a 28x28
  grayscale image can show; there are no colours or materials, which it cannot. Some words are shared
  between classes (long-sleeved: pullover, coat, shirt; zipped: coat, bag, ankle boot), as they would
  be in real captions.
- Any other classes get one noun each, the class name itself (lower-cased, as the tokeniser reads
  it), and templates without attribute words: nothing is known about them but their names.

The vocabulary is the sorted set of words the captions can contain, so it follows from the class
names alone: evaluation, export and resume rebuild the same token ids from the names the checkpoint
keeps. Zero-shot classification uses prompt templates different from the training templates (a
classifier is not handed a sentence it saw in training), made only of words the training captions
contain, so the tokeniser needs no unknown token for them; each class's prompts are encoded,
L2-normalised, averaged and renormalised (CLIP's prompt ensembling).
"""

import functools
import itertools
import re
from dataclasses import dataclass

import torch
from torch import nn

from .errors import UserError


@dataclass(frozen=True)
class ClassDescription:
    name: str                    # the class name, as the data gives it
    nouns: tuple[str, ...]       # the first is the class name used in zero-shot prompts
    attributes: tuple[str, ...]  # none, or at least two (a caption with attributes needs two different ones)


FASHION_MNIST = (
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

# Fashion-MNIST's training captions: {n} a noun, {a} and {b} two different attribute words of the class.
FASHION_MNIST_TEMPLATES = (
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

# Fashion-MNIST's zero-shot prompts: {n} the class name (its first noun). None is a training template.
FASHION_MNIST_PROMPTS = (
    "a photo of a {n}",
    "an image of the {n}",
    "a grayscale photo of a {n}",
    "a {n}",
    "this is a {n}",
)

# Any other data's training captions: {n} the class name; no attribute words, and no "grayscale" (the
# images may be in colour).
GENERIC_TEMPLATES = (
    "the {n}",
    "one {n}",
    "a photo of the {n}",
    "an image of a {n}",
    "a picture of a {n}",
    "this is the {n}",
    "an example of a {n}",
    "a small image of the {n}",
)

# Any other data's zero-shot prompts: none is a training template, every word is in one.
GENERIC_PROMPTS = (
    "a photo of a {n}",
    "an image of the {n}",
    "a picture of the {n}",
    "a {n}",
    "this is a {n}",
)

PAD, UNK = "<pad>", "<unk>"


def fill(template: str, noun: str, a: str = "", b: str = "") -> str:
    """A template filled in, with "a" turned into "an" before a vowel."""
    return re.sub(r"\ba (?=[aeiou])", "an ", template.format(n=noun, a=a, b=b))


@dataclass(frozen=True)
class CaptionSet:
    """The classes' descriptions with their caption and prompt templates, and what follows from them:
    the vocabulary, every caption tokenised in a table, and the zero-shot prompts."""

    descriptions: tuple[ClassDescription, ...]
    templates: tuple[str, ...]         # training captions
    prompt_templates: tuple[str, ...]  # zero-shot prompts

    @functools.cached_property
    def vocab(self) -> tuple[str, ...]:
        """<pad>, <unk> and every word the training captions can contain, sorted: the same ids on every
        machine and in every run with these classes."""
        words = {w for t in self.templates for w in t.replace("{a}", "").replace("{b}", "").replace("{n}", "").split()}
        words |= {"an"}  # from fill's article rule
        for c in self.descriptions:
            words |= {w for text in c.nouns + c.attributes for w in text.split()}
        return (PAD, UNK, *sorted(words))

    @functools.cached_property
    def word_ids(self) -> dict[str, int]:
        return {w: i for i, w in enumerate(self.vocab)}

    def tokenize(self, texts: list[str], length: int) -> torch.Tensor:
        """Lower-cased, whitespace-split word ids, right-padded with <pad> (id 0) to `length`: (N, length)."""
        tokens = torch.zeros(len(texts), length, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [self.word_ids.get(w, self.word_ids[UNK]) for w in text.lower().split()]
            if len(ids) > length:
                raise ValueError(f"{text!r} has {len(ids)} words, more than {length}")
            tokens[row, :len(ids)] = torch.tensor(ids, dtype=torch.long)
        return tokens

    def detokenize(self, tokens: torch.Tensor) -> list[str]:
        """The texts of (N, L) token ids, <pad> dropped."""
        return [" ".join(self.vocab[i] for i in row if i != 0) for row in tokens.tolist()]

    @functools.cached_property
    def texts(self) -> dict[tuple[int, int, int, int, int], str]:
        """Every training caption, keyed by (class, template, noun, attribute a, attribute b) indices,
        a != b; a class without attribute words has its captions at a = b = 0."""
        texts = {}
        for c, desc in enumerate(self.descriptions):
            pairs = list(itertools.permutations(range(len(desc.attributes)), 2)) if desc.attributes else [(0, 0)]
            for (t, template), (n, noun) in itertools.product(enumerate(self.templates), enumerate(desc.nouns)):
                for a, b in pairs:
                    attributes = (desc.attributes[a], desc.attributes[b]) if desc.attributes else ()
                    texts[c, t, n, a, b] = fill(template, noun, *attributes)
        return texts

    def prompts(self) -> list[list[str]]:
        """The zero-shot prompts of each class: every prompt template with the class name."""
        return [[fill(t, c.nouns[0]) for t in self.prompt_templates] for c in self.descriptions]

    @functools.cached_property
    def length(self) -> int:
        """Token length of every caption and prompt: the longest one's word count."""
        return max(len(text.split()) for text in [*self.texts.values(), *itertools.chain(*self.prompts())])

    @functools.cached_property
    def table(self) -> torch.Tensor:
        """The tokenised captions as a (class, template, noun, attribute a, attribute b, word) table.
        Entries no caption fills (a class with fewer nouns or attributes than the largest, or a == b)
        stay <pad> and are never drawn."""
        attributes = max(1, *(len(c.attributes) for c in self.descriptions))
        shape = (len(self.descriptions), len(self.templates), max(len(c.nouns) for c in self.descriptions), attributes)
        table = torch.zeros(*shape, attributes, self.length, dtype=torch.long)
        table[tuple(torch.tensor(list(self.texts)).T)] = self.tokenize(list(self.texts.values()), self.length)
        return table


@functools.lru_cache(maxsize=4)
def caption_set(class_names: tuple[str, ...]) -> CaptionSet:
    """The captions of these classes: Fashion-MNIST's hand-written descriptions when the names are
    Fashion-MNIST's (so its runs keep their captions and token ids), else one noun per class, its name
    as the tokeniser reads it (lower-cased words), with the generic templates. Cached: the table of
    Fashion-MNIST's ~30,000 captions is tokenised once per process."""
    if class_names == tuple(c.name for c in FASHION_MNIST):
        return CaptionSet(FASHION_MNIST, FASHION_MNIST_TEMPLATES, FASHION_MNIST_PROMPTS)
    named: dict[str, str] = {}
    for name in class_names:
        noun = " ".join(name.lower().split())
        if noun in named:
            raise UserError(f"method clip names each class in its captions by its lower-cased words, and classes "
                            f"{named[noun]!r} and {name!r} both read {noun!r}; rename one of them")
        named[noun] = name
    return CaptionSet(tuple(ClassDescription(name, (noun,), ()) for noun, name in named.items()),
                      GENERIC_TEMPLATES, GENERIC_PROMPTS)


class CaptionSampler(nn.Module):
    """Random captions for a batch of labels by tensor indexing, no per-image Python.

    All captions are tokenised once into a table indexed by (class, template, noun, attribute a,
    attribute b); a caption is drawn by picking, for each image, a template uniformly, one of its
    class's nouns uniformly and two different attribute words uniformly (a class without attribute
    words has one choice, 0, for both). The table is a non-persistent buffer: it moves with the model
    but is rebuilt from the class names, not saved.
    """

    def __init__(self, captions: CaptionSet):
        super().__init__()
        self.num_templates = len(captions.templates)
        num_attributes = torch.tensor([len(c.attributes) for c in captions.descriptions])
        self.register_buffer("table", captions.table.clone(), persistent=False)
        self.register_buffer("num_nouns", torch.tensor([len(c.nouns) for c in captions.descriptions]),
                             persistent=False)
        self.register_buffer("attribute_choices", num_attributes.clamp_min(1), persistent=False)
        self.register_buffer("other_choices", (num_attributes - 1).clamp_min(1), persistent=False)

    def forward(self, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """(B,) labels -> (B, L) token ids, all randomness from `generator`."""
        # Uniform integers below each count as a large random integer modulo the count (the bias,
        # under 1e-17, is far below anything measurable).
        r = torch.randint(0, 2**62, (4, len(labels)), generator=generator, device=labels.device)
        choices = self.attribute_choices[labels]
        template = r[0] % self.num_templates
        noun = r[1] % self.num_nouns[labels]
        a = r[2] % choices
        b = (a + 1 + r[3] % self.other_choices[labels]) % choices  # uniform over the other attributes
        return self.table[labels, template, noun, a, b]
