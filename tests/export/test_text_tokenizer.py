"""TextTokenizer's prefix rule on the tokenizer families of the models we serve: the tokens of a query/passage
prefix are never the user's, whether the tokenizer keeps the prefix's trailing space to itself (BERT WordPiece)
or folds it into the text's first token (Llama 3's byte-level BPE, SentencePiece's Metaspace). Tiny tokenizers are
trained in-process with the `tokenizers` library, as the real ones are configured."""

from __future__ import annotations

import pytest
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from eft.export.artifact import TextTokenizer

CORPUS = ["query: hello world", "passage: hello there quick brown world", "search_query: hello"] * 100


def _byte_level(path) -> str:
    """Llama 3 style: regex split keeping the leading space with the word, byte-level, offsets not trimmed."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r" ?\p{L}+| ?[^\s\p{L}]+|\s+"), "isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=300, special_tokens=["<s>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))])])
    tok.decoder = decoders.ByteLevel()
    tok.save(str(path))
    return str(path)


def _metaspace(path) -> str:
    """SentencePiece style (e5-multilingual, XLM-R): '▁' marks a word start, the space is part of the token."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=200, special_tokens=["<s>", "</s>", "<unk>"]))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 1)])
    tok.decoder = decoders.Metaspace()
    tok.save(str(path))
    return str(path)


def _wordpiece(path) -> str:
    """BERT style: whitespace and punctuation split off, the space belongs to no token."""
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(CORPUS, trainers.WordPieceTrainer(vocab_size=200, special_tokens=["[UNK]", "[CLS]",
                                                                                              "[SEP]"]))
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                       special_tokens=[("[CLS]", 1), ("[SEP]", 2)])
    tok.decoder = decoders.WordPiece()
    tok.save(str(path))
    return str(path)


BUILDERS = {"byte_level": _byte_level, "metaspace": _metaspace, "wordpiece": _wordpiece}


@pytest.fixture(params=sorted(BUILDERS))
def tokenizer_file(request, tmp_path) -> str:
    return BUILDERS[request.param](tmp_path / "tokenizer.json")


def _parts(tt: TextTokenizer, seq: list[int], n_prefix: int) -> tuple[list[int], list[int]]:
    """(the prefix's ids, the user's ids) of one encoded sequence."""
    body = seq[len(tt._head):len(seq) - len(tt._tail)]
    return body[:n_prefix], body[n_prefix:]


def test_the_prefix_keeps_its_own_tokens_and_the_user_keeps_theirs(tokenizer_file):
    tt = TextTokenizer(tokenizer_file, max_length=64)
    text = "hello world"
    for prefix in ("query: ", "passage: ", "search_query: "):
        n_prefix = tt.prefix_length(prefix)
        # the prefix's tokens are those of its text: its trailing space goes with the user's first word
        assert n_prefix == len(tt.tok.encode(prefix.rstrip(), add_special_tokens=False).ids), prefix
        seqs, counts = tt.encode_counted([text], "NONE", prefix)
        head, user = _parts(tt, seqs[0], n_prefix)
        assert tt.tok.decode(head).replace(" ", "") == prefix.replace(" ", "")
        assert tt.tok.decode(user).strip() == text
        assert counts == [len(user)]


@pytest.mark.parametrize("side", ["START", "END"])
def test_truncation_keeps_the_prefix_whole_and_cuts_only_the_users_text(tokenizer_file, side):
    text = "hello there quick brown world " * 4
    prefix = "query: "
    whole = TextTokenizer(tokenizer_file, max_length=64)
    n_prefix = whole.prefix_length(prefix)
    full_head, full_user = _parts(whole, whole.encode_counted([text], "NONE", prefix)[0][0], n_prefix)
    # 3 tokens of user text; the network reads more, so the prefix goes on top of them
    short = TextTokenizer(tokenizer_file, max_length=whole.n_special + 3, hard_limit=64)
    seqs, counts = short.encode_counted([text], side, prefix)
    head, user = _parts(short, seqs[0], n_prefix)
    assert head == full_head  # never cut
    assert counts == [3]
    assert user == (full_user[-3:] if side == "START" else full_user[:3])
