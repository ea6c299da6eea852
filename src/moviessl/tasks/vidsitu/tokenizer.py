"""The SRL tokenizer: byte-level BPE (HuggingFace ``tokenizers``) + verb ids and role tags.

VidSitu's targets are ``verb_id <Arg0> phrase <Arg1> phrase ...`` (VidSitu's ``vidsitu_code/dat_loader.py``). Verb ids
(``speak.01``) and role tags (``<Arg0>`` .. ``<AScn>``) are single added tokens; ``<pad>`` and ``</s>``
are special tokens. The BPE is trained offline on the training phrases only, so nothing from the
validation text leaks into the vocabulary. A user ``tokenizer.json`` (e.g. VidSitu's GPT-2 BPE with
its added tokens, saved by HF) can be given instead; it must contain the role tags and a pad and an
eos token, and decode its own pieces back to text (a decoder matching its pre-tokenizer).

Token sequences are built segment by segment (``[verb] [tag] bpe(" phrase") [tag] ...``) rather than
by encoding one string, so they never depend on how a tokenizer treats whitespace around added
tokens. Parsing walks the ids (a tag id is a tag, whatever the text around it) and then reads the
words as VidSitu's own parser does.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable, Sequence

from ...data.vidsitu import parse_srl_output
from ...errors import BadInputError
from ...utils.io import atomic_write_text

# Short role names (VidSitu's ``arg_mapper``) in a fixed order; all get a tag, scored or not.
ROLES: tuple[str, ...] = (
    "Arg0",
    "Arg1",
    "Arg2",
    "Arg3",
    "Arg4",
    "Arg5",
    "ADir",
    "APrp",
    "AMnr",
    "ALoc",
    "AGol",
    "AScn",
)
ROLE_TAGS: tuple[str, ...] = tuple(f"<{r}>" for r in ROLES)
PAD, EOS = "<pad>", "</s>"
PAD_ALIASES, EOS_ALIASES = ("<pad>", "[PAD]"), ("</s>", "<|endoftext|>", "[SEP]", "<eos>")

log = logging.getLogger(__name__)


class SRLTokenizer:
    """Wraps a ``tokenizers.Tokenizer`` with the SRL target conventions."""

    def __init__(self, tok):
        # A tokenizer.json may carry padding / truncation settings (HF saves them with the file):
        # they would pad or cut every phrase encoded on its own, putting pads inside a target and
        # after a forced verb prefix. Targets are padded and truncated here, as a whole.
        tok.no_padding()
        tok.no_truncation()
        self.tok = tok
        self.pad_id = self._find(PAD_ALIASES, "pad")
        self.eos_id = self._find(EOS_ALIASES, "eos")
        missing = [t for t in ROLE_TAGS if tok.token_to_id(t) is None]
        if missing:
            raise BadInputError(None, f"tokenizer lacks the role tags {', '.join(missing)} (they must be added tokens)")
        self.tag_ids: dict[str, int] = {r: tok.token_to_id(t) for r, t in zip(ROLES, ROLE_TAGS)}
        self.id_to_role: dict[int, str] = {i: r for r, i in self.tag_ids.items()}
        # what a phrase's text must never become: these ids give a target its structure
        self.structural_ids = frozenset(self.id_to_role) | {self.pad_id, self.eos_id}
        self.special_ids = frozenset(i for i, t in tok.get_added_tokens_decoder().items() if t.special)
        # a tokenizer.json whose decoder is missing (or does not match its pre-tokenizer) trains, then
        # writes every phrase as its pieces ('Ġa Ġman', '▁a ▁man')
        probe = "a man"
        back = tok.decode(self.phrase_ids(" " + probe), skip_special_tokens=True)
        if back.split() != probe.split():
            raise BadInputError(
                None,
                f"tokenizer does not decode its own pieces back to text: {probe!r} comes back as {back.strip()!r} "
                "(it needs the decoder that matches its pre-tokenizer: ByteLevel, Metaspace, WordPiece, ...)",
            )
        self._dropped_warned = False

    def _find(self, names: Sequence[str], what: str) -> int:
        for n in names:
            i = self.tok.token_to_id(n)
            if i is not None:
                return i
        raise BadInputError(None, f"tokenizer has no {what} token (one of {', '.join(names)})")

    # ---- building ---------------------------------------------------------------------------
    @classmethod
    def train(
        cls, phrases: Iterable[str], verb_ids: Iterable[str], vocab_size: int = 2000, min_frequency: int = 2
    ) -> "SRLTokenizer":
        """Byte-level BPE on ``phrases``; ``verb_ids`` and the role tags become single tokens."""
        from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=int(vocab_size),
            min_frequency=int(min_frequency),
            special_tokens=[PAD, EOS],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        # phrases are always preceded by a space in targets, so train on them that way
        tok.train_from_iterator((" " + p for p in phrases), trainer=trainer)
        tok.add_tokens([AddedToken(t, single_word=False, normalized=False) for t in ROLE_TAGS])
        tok.add_tokens([AddedToken(v, normalized=False) for v in sorted(set(verb_ids))])
        return cls(tok)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "SRLTokenizer":
        from tokenizers import Tokenizer

        # Read here, not by the library's from_file: the Rust side takes the path as strict UTF-8
        # text, and a non-ASCII name under a non-UTF-8 locale reaches Python as surrogate escapes
        # (PEP 383), so a valid file in a folder named 'Amélie' was "not a tokenizer.json".
        try:
            with open(path, "rb") as f:
                tok = Tokenizer.from_str(f.read().decode("utf-8-sig"))
        except OSError as e:
            raise BadInputError(path, f"cannot read the tokenizer ({e.strerror or e})") from None
        except Exception as e:
            raise BadInputError(path, f"not a HuggingFace tokenizer.json ({str(e).splitlines()[0][:120]})") from None
        try:
            return cls(tok)
        except BadInputError as e:
            raise BadInputError(path, e.cause) from None

    @classmethod
    def from_str(cls, text: str) -> "SRLTokenizer":
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_str(text))

    def to_str(self) -> str:
        return self.tok.to_str()

    def save(self, path: str | os.PathLike) -> Path:
        return atomic_write_text(path, self.to_str())

    @property
    def vocab_size(self) -> int:
        """Rows of the TxD's embedding and output layer: the largest id + 1 (a user's tokenizer.json
        may leave ids unused; its token count would leave the largest ids without a row)."""
        return 1 + max(self.tok.get_vocab(with_added_tokens=True).values())

    # ---- encoding ---------------------------------------------------------------------------
    def bpe(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def phrase_ids(self, text: str) -> list[int]:
        """A phrase's text as text. Added tokens are matched in the text before the model, so a
        phrase holding ``</s>`` or ``<Arg2>`` would become the end token (the target cut there) or a
        role the annotation does not have; such a phrase goes through the normalizer, pre-tokenizer
        and model alone. What the model itself can only write as such a token (a Unigram vocabulary
        holds ``</s>`` whole) is dropped, with a warning."""
        ids = self.bpe(text)
        if self.structural_ids.isdisjoint(ids):
            return ids
        t = self.tok
        norm = t.normalizer.normalize_str(text) if t.normalizer is not None else text
        pieces = [p for p, _ in t.pre_tokenizer.pre_tokenize_str(norm)] if t.pre_tokenizer is not None else [norm]
        ids = [x.id for p in pieces for x in t.model.tokenize(p)]
        kept = [i for i in ids if i not in self.structural_ids]
        if len(kept) < len(ids) and not self._dropped_warned:
            self._dropped_warned = True
            log.warning(
                "SRL target phrase %r holds text this tokenizer can only write as its end, pad or a role tag "
                "token; dropped from the target (said once)",
                text.strip(),
            )
        return kept

    def unfaithful(self, phrases: Iterable[str]) -> tuple[int, int, tuple[str, str] | None]:
        """How many of the distinct ``phrases`` do not come back through encoding and decoding
        (whitespace aside): ``(lost, distinct, (first lost, what came back))``."""
        distinct = sorted(set(phrases))
        enc = self.tok.encode_batch([" " + p for p in distinct], add_special_tokens=False)
        ids = [
            e.ids if self.structural_ids.isdisjoint(e.ids) else self.phrase_ids(" " + p) for p, e in zip(distinct, enc)
        ]
        back = self.tok.decode_batch(ids, skip_special_tokens=True)
        lost = [(p, b.strip()) for p, b in zip(distinct, back) if b.split() != p.split()]
        return len(lost), len(distinct), (lost[0] if lost else None)

    def verb_prefix(self, verb_id: str) -> list[int]:
        """The verb's single added token, else its BPE pieces (a verb unseen in training)."""
        i = self.tok.token_to_id(verb_id)
        return [i] if i is not None else self.bpe(verb_id)

    def encode_target(self, verb_id: str, roles: Sequence[tuple[str, str]], max_len: int = 60) -> list[int]:
        """``[verb] <R1> bpe(" phrase") <R2> ... [eos]``, at most ``max_len`` ids (VidSitu: 60). A longer
        target is cut and still ends with eos, as VidSitu's ``pad_tokens`` (``utils/dat_utils.py``)
        writes eos over the last kept position: the decoder is taught to stop where decoding stops."""
        ids = list(self.verb_prefix(verb_id))
        for role, phrase in roles:
            if role not in self.tag_ids:
                raise BadInputError(None, f"unknown role '{role}' (expected one of {', '.join(ROLES)})")
            ids.append(self.tag_ids[role])
            ids.extend(self.phrase_ids(" " + phrase))
        ids.append(self.eos_id)
        return ids if len(ids) <= max_len else ids[: max_len - 1] + [self.eos_id]

    # ---- decoding ---------------------------------------------------------------------------
    def decode(self, ids: Sequence[int]) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=False)

    def parse(self, ids: Sequence[int]) -> dict[str, str]:
        """Token ids -> ``{"vb_id": ..., "Arg0": phrase, ...}`` (VidSitu's ``vb_output`` event dict).

        Stops at eos, skips pads and other special tokens, and reads the words as VidSitu's
        ``conv_seq_to_srl`` reads its decoded string (:func:`moviessl.data.vidsitu.parse_srl_output`):
        the first word is the verb id (no "." in it: ``{}``), a repeated tag overwrites, and
        ``<Arg5>``, which that parser does not know, stays a word of the role before it. The
        paper's numbers come from that parser."""
        segs: list[tuple[str | None, list[int]]] = [(None, [])]
        for k, i in enumerate(ids):
            i = int(i)
            if i == self.eos_id:
                break
            # VidSitu decodes with skip_special_tokens=True: a user's <unk> / <s> is no word of a
            # phrase. The forced verb stays, whatever its token's flags (it is the event's vb_id).
            if i == self.pad_id or (k > 0 and i in self.special_ids and i not in self.id_to_role):
                continue
            if i in self.id_to_role:
                segs.append((self.id_to_role[i], []))
            else:
                segs[-1][1].append(i)
        words = self.decode(segs[0][1]).split()
        for role, seg in segs[1:]:
            words += [f"<{role}>", *self.decode(seg).split()]
        return parse_srl_output(" ".join(words))


def target_text(verb_id: str, roles: Sequence[tuple[str, str]]) -> str:
    """The human-readable target string: ``verb_id <Arg0> phrase <Arg1> phrase ...`` (VidSitu's ``dat_loader.py``)."""
    return verb_id + "".join(f" <{r}> {p}" for r, p in roles)
