import os
import re

import pytest

from conftest import VERBS, _event
from moviessl.data.vidsitu import EVENTS, parse_srl_output, roles_in_order
from moviessl.errors import BadInputError
from moviessl.tasks.vidsitu.tokenizer import ROLE_TAGS, SRLTokenizer, target_text

PHRASES = ["the man", "a red box", "warehouse", "the woman", "on the street", "down", "fast", "a kitchen"] * 5


@pytest.fixture(scope="module")
def tok():
    return SRLTokenizer.train(PHRASES, list(VERBS), vocab_size=400, min_frequency=1)


def test_round_trip_all_roles_including_arg5_and_unicode(tok):
    roles = [
        ("Arg0", "the man"),
        ("Arg1", "a red box, très lourd!"),
        ("Arg5", "fast"),
        ("ALoc", "on  the street"),
        ("AScn", "warehouse"),
    ]
    ids = tok.encode_target("push.01", roles)
    assert ids[0] == tok.tok.token_to_id("push.01") and ids[-1] == tok.eos_id
    assert sum(i in tok.id_to_role for i in ids) == len(roles)  # every tag is one token
    out = tok.parse(ids)
    # whitespace inside a phrase is normalised to single spaces, nothing else changes; <Arg5>,
    # which VidSitu's parser does not know, stays a word of the role before it
    assert out == {
        "vb_id": "push.01",
        "Arg0": "the man",
        "Arg1": "a red box, très lourd! <Arg5> fast",
        "ALoc": "on the street",
        "AScn": "warehouse",
    }


def test_unknown_verb_uses_bpe_pieces_and_still_parses(tok):
    pre = tok.verb_prefix("juggle.03")
    assert len(pre) > 1 and tok.tok.token_to_id("juggle.03") is None
    ids = tok.encode_target("juggle.03", [("Arg0", "the woman")])
    assert ids[: len(pre)] == pre
    assert tok.parse(ids) == {"vb_id": "juggle.03", "Arg0": "the woman"}


def test_parse_rules(tok):
    t = tok.tag_ids
    man = tok.bpe(" the man")
    # stops at eos; pads skipped; a repeated tag overwrites (VidSitu's parser)
    ids = (
        tok.verb_prefix("run.02")
        + [t["Arg0"]]
        + man
        + [t["Arg0"]]
        + tok.bpe(" junk")
        + [tok.eos_id]
        + [t["Arg1"]]
        + man
    )
    assert tok.parse(ids + [tok.pad_id] * 3) == {"vb_id": "run.02", "Arg0": "junk"}
    # a tag with no text -> empty phrase; an output not starting with a verb id -> {}
    assert tok.parse(tok.verb_prefix("run.02") + [t["AScn"], tok.eos_id]) == {"vb_id": "run.02", "AScn": ""}
    assert tok.parse(man + [t["Arg0"]] + man) == {}
    # vb_id is the first word alone; words between it and the first tag go under "" (as the reference)
    assert tok.parse(tok.verb_prefix("run.02") + man + [t["Arg1"]] + man) == {
        "vb_id": "run.02",
        "": "the man",
        "Arg1": "the man",
    }
    assert tok.parse(tok.verb_prefix("run.02") + man) == {"vb_id": "run.02", "": "the man"}
    # the ids walk gives what VidSitu's parser gives on the decoded string (tags spaced out)
    for seq in (ids, tok.encode_target("push.01", [("Arg0", "the man"), ("Arg5", "fast"), ("AScn", "warehouse")])):
        text = tok.decode(seq[: seq.index(tok.eos_id)])
        assert tok.parse(seq) == parse_srl_output(" ".join(re.sub(r"(<A\w+>)", r" \1 ", text).split()))


def test_truncation_and_save_load(tok, tmp_path):
    roles = [("Arg0", "the man " * 30)]
    ids = tok.encode_target("push.01", roles, max_len=12)
    assert len(ids) == 12
    tok.save(tmp_path / "tokenizer.json")
    tok2 = SRLTokenizer.from_file(tmp_path / "tokenizer.json")
    assert tok2.encode_target("talk.01", [("Arg2", "the man")]) == tok.encode_target("talk.01", [("Arg2", "the man")])
    assert tok2.vocab_size == tok.vocab_size


def test_a_cut_target_ends_with_the_end_token_as_vidsitus(tok):
    """VidSitu's ``pad_tokens`` (``utils/dat_utils.py``) cuts a target longer than 60 tokens and
    writes eos over its last kept position; the target was cut after the eos, so a long annotation
    taught the decoder to go on past the length where decoding stops."""
    roles = [("Arg0", "the man " * 30), ("Arg1", "a red box")]
    full = tok.encode_target("push.01", roles, max_len=1000)
    ids = tok.encode_target("push.01", roles, max_len=12)
    assert ids == full[:11] + [tok.eos_id]
    # a target that fits keeps every token; one exactly max_len long (eos included) is not cut
    roles = [("Arg1", "a red box")]
    short = tok.encode_target("push.01", roles, max_len=60)
    assert short[-1] == tok.eos_id and short == tok.encode_target("push.01", roles, max_len=len(short))


def test_user_tokenizer_without_role_tags_is_rejected(tmp_path):
    from tokenizers import Tokenizer, models

    t = Tokenizer(models.BPE())
    t.add_special_tokens(["<pad>", "</s>"])
    t.save(str(tmp_path / "bad.json"))
    with pytest.raises(BadInputError, match="role tags"):
        SRLTokenizer.from_file(tmp_path / "bad.json")
    (tmp_path / "garbage.json").write_text("{not json")
    with pytest.raises(BadInputError, match="garbage.json"):
        SRLTokenizer.from_file(tmp_path / "garbage.json")


def test_target_follows_arg_list_order_and_missing_roles():
    ev = _event("v_abcdefghijk_seg_0_10", "fall.01")
    # shuffle the dict order: the target order must come from Arg_List positions (mixed int / str)
    ev["Arg_List"] = {"Scene of the Event": "3", "Arg1 (thing falling)": 1, "ArgM (direction)": "2"}
    ev["Args"] = dict(reversed(list(ev["Args"].items())))
    roles = roles_in_order(ev)
    assert [r for r, _ in roles] == ["Arg1", "ADir", "AScn"]
    text = target_text("fall.01", roles)
    assert text == "fall.01 <Arg1> a red box <ADir> down <AScn> warehouse"
    assert parse_srl_output(text) == {"vb_id": "fall.01", "Arg1": "a red box", "ADir": "down", "AScn": "warehouse"}
    # an event without Arg0/Arg2: the parsed dict simply lacks them (the evaluator scores them as "")
    assert "Arg0" not in parse_srl_output(text) and set(ROLE_TAGS) >= {"<Arg5>", "<AScn>"}


def test_a_jobs_saved_vocabulary_is_reused_only_for_the_same_phrases_and_settings(tmp_path):
    """OUT/tokenizer.json is shared by a job's seeds; another vocab_size or edited annotations train
    a new one (the saved one was reused whatever the settings, while the seeds retrained)."""
    from types import SimpleNamespace as NS

    from moviessl.tasks.vidsitu.srl import SRLTask

    def split(phrase=None):
        recs = {}
        for k in range(6):
            vseg = f"v_{k}_seg_0_10"
            rec = {ev: _event(vseg, list(VERBS)[(k + i) % len(VERBS)]) for i, ev in enumerate(EVENTS)}
            if phrase and k == 0:
                rec["Ev1"]["Args"] = {role: phrase for role in rec["Ev1"]["Args"]}
            recs[vseg] = [rec]
        return NS(records=recs)

    def cfg(size):
        return NS(max_len=24, vocab_size=size, min_frequency=1, txd="txd_cpu", txd_overrides={})

    saved = tmp_path / "tokenizer.json"
    big = SRLTask(cfg(420), split(), out=tmp_path).tok.to_str()
    assert saved.read_text() == big
    assert SRLTask(cfg(420), split(), out=tmp_path).tok.to_str() == big  # the job's seeds share it
    small = SRLTask(cfg(300), split(), out=tmp_path).tok
    assert small.vocab_size < SRLTokenizer.from_str(big).vocab_size and saved.read_text() == small.to_str()
    edited = SRLTask(cfg(300), split("zyzzyva quokkas"), out=tmp_path).tok
    assert edited.to_str() != small.to_str() and saved.read_text() == edited.to_str()
    # a user's tokenizer replaces the job's; the next run without it trains its own again
    user = tmp_path / "user.json"
    small.save(user)
    SRLTask(cfg(300), split("zyzzyva quokkas"), tokenizer=user, out=tmp_path)
    assert saved.read_text() == small.to_str()
    assert SRLTask(cfg(300), split("zyzzyva quokkas"), out=tmp_path).tok.to_str() == edited.to_str()


def test_a_user_tokenizers_padding_and_truncation_settings_are_not_applied_per_phrase(tok, tmp_path):
    """A tokenizer.json saved with padding / truncation enabled padded every phrase and the verb
    prefix on their own (pads inside the target, a pad forced after an unseen verb) or cut them."""
    from tokenizers import Tokenizer

    t = Tokenizer.from_str(tok.to_str())
    t.enable_padding(pad_id=tok.pad_id, pad_token="<pad>", length=8)
    t.enable_truncation(max_length=2)
    t.save(str(tmp_path / "user.json"))
    user = SRLTokenizer.from_file(tmp_path / "user.json")
    roles = [("Arg0", "the man in a red box"), ("AScn", "warehouse")]
    assert user.encode_target("push.01", roles) == tok.encode_target("push.01", roles)
    assert tok.pad_id not in user.encode_target("push.01", roles)
    assert user.verb_prefix("juggle.03") == tok.verb_prefix("juggle.03")
    assert user.parse(user.encode_target("push.01", roles))["Arg0"] == "the man in a red box"


def test_an_eval_event_with_an_empty_verb_id_decodes_to_no_roles_not_a_crash(tmp_path):
    """An empty VerbID (a string, so the loader accepts it) encoded to no forced token, and decoding
    the whole eval split ended in an AssertionError traceback after the seeds had trained."""
    from types import SimpleNamespace as NS

    import torch

    from moviessl.tasks.vidsitu.srl import SRLTask

    vseg = "v_abcdefghijk_seg_0_10"
    rec = {ev: _event(vseg, list(VERBS)[i % len(VERBS)]) for i, ev in enumerate(EVENTS)}
    cfg = NS(max_len=24, vocab_size=300, min_frequency=1, txd="txd_cpu", txd_overrides={}, memory="self")
    task = SRLTask(cfg, NS(records={vseg: [rec]}))
    rec["Ev2"]["VerbID"] = ""
    prefix = task.eval_target(vseg, [rec])
    assert (prefix[:, 0] >= 0).all()
    torch.manual_seed(0)
    model, _ = task.build_model(16)
    (entry,) = task.entries(model.eval(), torch.randn(1, 5, 16), prefix[None], [0])
    # untrained: what follows the forced verb is noise, but every other event starts with its verb
    assert entry["vb_output"]["Ev2"] == {}
    assert all(entry["vb_output"][ev]["vb_id"].startswith(rec[ev]["VerbID"]) for ev in ("Ev1", "Ev3", "Ev4", "Ev5"))


def test_a_user_tokenizer_whose_ids_have_gaps_sizes_the_vocabulary_by_its_largest_id(tok, tmp_path):
    """The TxD's embedding and output layer have ``vocab_size`` rows; a tokenizer.json whose ids are
    not contiguous (tokens dropped or renumbered by hand or by a converter) was sized by its token
    count, so a token above it failed in the embedding mid-training (an index error)."""
    import json

    from tokenizers import Tokenizer

    d = json.loads(tok.to_str())
    vocab = d["model"]["vocab"]
    piece = tok.tok.id_to_token(tok.bpe(" the")[0])
    vocab[piece] += 1000
    user = SRLTokenizer(Tokenizer.from_str(json.dumps(d)))
    ids = user.encode_target("push.01", [("Arg0", "the man")])
    assert vocab[piece] in ids and max(ids) < user.vocab_size
    assert user.parse(ids)["Arg0"] == "the man"


def test_a_negative_bpe_min_frequency_is_one_line():
    """``srl.min_frequency=-1`` reached the BPE trainer and ended the job in an OverflowError traceback
    ("can't convert negative int to unsigned") after the data were read."""
    from moviessl.config import load_config

    with pytest.raises(BadInputError, match=r"^srl.min_frequency: -1 must not be negative"):
        load_config("vidsitu", "cpu", ["srl.min_frequency=-1"])
    assert load_config("vidsitu", "cpu", ["srl.min_frequency=0"]).srl.min_frequency == 0


def _user_tokenizer(kind, decoder=True, path=None):
    """A small user tokenizer.json built offline with ``tokenizers``: the role tags and a verb added,
    ``kind`` one of ``bytelevel`` (GPT-2 style), ``unigram`` (Metaspace) or ``wordlevel`` (whitespace
    words, an ``<unk>`` special token)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

    corpus = ["a man", "the man", "a red box", "the woman", "on the street", "warehouse"] * 3
    specials = ["<pad>", "</s>", "<unk>", "<s>"]
    quiet = {"special_tokens": specials, "show_progress": False}
    if kind == "bytelevel":
        t = Tokenizer(models.BPE())
        t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        t.decoder = decoders.ByteLevel() if decoder else None
        alphabet = pre_tokenizers.ByteLevel.alphabet()
        t.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, initial_alphabet=alphabet, **quiet))
    elif kind == "unigram":
        t = Tokenizer(models.Unigram())
        t.pre_tokenizer = pre_tokenizers.Metaspace()
        t.decoder = decoders.Metaspace() if decoder else None
        t.train_from_iterator(corpus, trainers.UnigramTrainer(vocab_size=60, unk_token="<unk>", **quiet))
    else:
        t = Tokenizer(models.WordLevel(unk_token="<unk>"))
        t.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        t.train_from_iterator(corpus, trainers.WordLevelTrainer(**quiet))
    t.add_tokens([AddedToken(x, normalized=False) for x in [*ROLE_TAGS, "push.01"]])
    if path is None:
        return SRLTokenizer.from_str(t.to_str())
    t.save(str(path))
    return path


@pytest.mark.parametrize("kind", ["trained", "bytelevel", "unigram"])
def test_a_phrase_holding_the_end_or_a_role_tag_as_text_keeps_its_targets_structure(tok, kind, caplog):
    """Added tokens are matched in the text before the BPE, so an annotator's phrase holding ``</s>``
    or ``<Arg2>`` was encoded as the end token (the target cut there: the model was taught to stop
    mid-target and the roles after it were never trained) or as a role tag the annotation does not
    have."""
    t = tok if kind == "trained" else _user_tokenizer(kind)
    roles = [("Arg0", "a sheet reads </s> here"), ("Arg1", "he says <Arg2> hi"), ("AScn", "warehouse")]
    ids = t.encode_target("push.01", roles)
    assert ids.count(t.eos_id) == 1 and ids[-1] == t.eos_id and t.pad_id not in ids
    assert [i for i in ids if i in t.id_to_role] == [t.tag_ids[r] for r, _ in roles]
    out = t.parse(ids)
    assert out["AScn"] == "warehouse"
    if kind != "unigram":  # byte-level pieces spell any text; a Unigram vocabulary may hold '</s>' only whole
        assert out["Arg0"] == "a sheet reads </s> here"
    else:
        assert out["Arg0"].startswith("a sheet reads") and "dropped" in caplog.text


def test_special_tokens_other_than_pad_and_end_do_not_reach_the_submission(tmp_path):
    """VidSitu decodes with ``skip_special_tokens=True``; a user's tokenizer with an ``<unk>`` or ``<s>``
    special token put them into the phrases as words ('the <unk> man'), scored by CIDEr / ROUGE and
    clustered by LEA as the reference never does."""
    t = _user_tokenizer("wordlevel")
    ids = t.encode_target("push.01", [("Arg0", "the ☃ man"), ("AScn", "warehouse")])
    assert t.tok.token_to_id("<unk>") in ids
    s = t.tok.token_to_id("<s>")
    ids = ids[:1] + [s] + ids[1:]
    assert t.parse(ids) == {"vb_id": "push.01", "Arg0": "the man", "AScn": "warehouse"}


@pytest.mark.parametrize("kind", ["bytelevel", "unigram"])
def test_a_user_tokenizer_that_cannot_decode_its_own_pieces_is_one_line(kind, tmp_path):
    """A tokenizer.json without a decoder (its pre-tokenizer's ByteLevel / Metaspace but no matching
    decoder) trained and wrote every phrase of the submission as 'Ġa Ġman' / '▁a ▁man', exit 0."""
    good = SRLTokenizer.from_file(_user_tokenizer(kind, path=tmp_path / "good.json"))
    assert good.parse(good.encode_target("push.01", [("Arg0", "a man")]))["Arg0"] == "a man"
    with pytest.raises(BadInputError, match=r"bad\.json: .*decod.*'a man'"):
        SRLTokenizer.from_file(_user_tokenizer(kind, decoder=False, path=tmp_path / "bad.json"))


def test_a_user_tokenizer_that_loses_train_phrases_says_how_many(tok, tmp_path, caplog):
    """A user's tokenizer.json that lower-cases, strips accents or writes ``<unk>`` trained a model that
    could never write those phrases as the annotators did (VidSitu scores case- and accent-sensitively),
    without a word."""
    from types import SimpleNamespace as NS

    from moviessl.tasks.vidsitu.srl import SRLTask

    vseg = "v_abcdefghijk_seg_0_10"
    rec = {ev: _event(vseg, "push.01") for ev in EVENTS}
    rec["Ev2"]["Args"] = {raw: "the café owner" for raw in rec["Ev2"]["Args"]}
    cfg = NS(max_len=24, vocab_size=300, min_frequency=1, txd="txd_cpu", txd_overrides={})
    faithful = tmp_path / "faithful.json"
    tok.save(faithful)
    SRLTask(cfg, NS(records={vseg: [rec]}), tokenizer=faithful)
    assert "do not come back" not in caplog.text
    lossy = _user_tokenizer("wordlevel", path=tmp_path / "lossy.json")
    SRLTask(cfg, NS(records={vseg: [rec]}), tokenizer=lossy)
    assert re.search(r"lossy\.json: 1 of 4 distinct train phrases .*'the café owner' -> 'the'\)", caplog.text)


def test_the_val_prompt_and_the_train_target_are_the_first_record_in_file_order():
    """VidSitu's valid loader (``vidsitu_code/dat_loader.py``, ``vb_args_item_getter``) keeps the
    first 3 records in file order (no shuffle: that is the evaluator's) and the decoder is prompted
    with annotation 0's verb token (``seq_out_by_ev[:, :, [0]]`` in ``mdl_sf_base.py``); training
    reads record 0 alone. Released val records all carry ``vb_to_use``; here record 0's verbs differ
    from the other two, which agree, so a majority or a shuffled pick would prompt talk.01."""
    from types import SimpleNamespace as NS

    from moviessl.tasks.vidsitu.srl import SRLTask

    vseg = "v_abcdefghijk_seg_0_10"
    train = {ev: _event(vseg, list(VERBS)[i % len(VERBS)]) for i, ev in enumerate(EVENTS)}
    cfg = NS(max_len=24, vocab_size=300, min_frequency=1, txd="txd_cpu", txd_overrides={}, memory="self")
    task = SRLTask(cfg, NS(records={vseg: [train]}))
    first = {ev: _event(vseg, "push.01") for ev in EVENTS}
    others = [{ev: _event(vseg, "talk.01") for ev in EVENTS} for _ in range(2)]
    push, talk = task.tok.verb_prefix("push.01"), task.tok.verb_prefix("talk.01")
    assert len(push) == len(talk) == 1 and push != talk  # train verbs: one added token each
    prefix = task.eval_target(vseg, [first, *others])
    assert prefix[:, 0].tolist() == push * len(EVENTS)
    y = task.train_target(vseg, [first, *others])
    assert y[:, 0].tolist() == push * len(EVENTS)
    assert task.tok.parse(y[0].tolist()) == {
        "vb_id": "push.01",
        "Arg0": "the man",
        "Arg1": "a red box",
        "AScn": "warehouse",
    }


def test_a_tokenizer_in_a_folder_with_a_non_ascii_name_loads_under_any_locale(tok, tmp_path):
    """Under a non-UTF-8 locale (LC_ALL=C with PYTHONUTF8=0) a non-ASCII name reaches Python as
    surrogate escapes (PEP 383; 'Amélie' is 'Am\\udcc3\\udca9lie'), which Python's own file calls take
    back to the name's bytes but the tokenizers library's from_file refuses: a valid --tokenizer,
    and a rerun's own OUT/tokenizer.json, were "not a HuggingFace tokenizer.json"."""
    folder = tmp_path / "Am\udcc3\udca9lie"  # the name os.fsdecode gives for b"Am\xc3\xa9lie" there
    folder.mkdir()
    tok.save(folder / "tokenizer.json")
    assert os.listdir(os.fsencode(tmp_path)) == [b"Am\xc3\xa9lie"]  # the name's own bytes on disk
    back = SRLTokenizer.from_file(folder / "tokenizer.json")
    assert back.to_str() == tok.to_str()
    with pytest.raises(BadInputError, match=r"nope\.json: cannot read the tokenizer \(No such file"):
        SRLTokenizer.from_file(folder / "nope.json")
