"""Turning a document's bytes into text in whatever common encoding it was written.

Order (the one browsers and well-kept readers follow):
1. a byte-order mark (UTF-8, UTF-16 LE/BE, UTF-32 LE/BE) decides;
2. HTML only: the encoding the page declares (`<meta charset>`, `http-equiv`, an XML declaration), read with
   BeautifulSoup's `EncodingDetector` and mapped the way the WHATWG Encoding Standard maps labels (a page that says
   `iso-8859-1` is windows-1252, `shift_jis` is Microsoft's cp932); a declaration the bytes contradict is ignored;
3. strict UTF-8;
4. detection with `charset-normalizer`; where it reads a text's accented letters as another script (CJK from
   UTF-16 without a byte-order mark or Big5, Cyrillic, Arabic) but windows-1252, the WHATWG fallback for
   unlabelled legacy text, reads them as Latin letters with no more mess (`charset_normalizer.md.mess_ratio`),
   windows-1252. charset-normalizer scores a dozen code pages as equally clean for a short Western text and then
   picks by its own order: Latin-1 "Zürich" came back as UTF-16, "Ça va très bien" as Big5, "5 €" (cp1252) as
   Cyrillic cp1125. Between two Latin code pages (cp1250 "Kraków jest piękny" against cp1252 "piêkny") only
   the language tells, and charset-normalizer's choice stands: Latin-1 "crème" read as cp1250 "crčme" stays
   wrong, and not only in a short text (a whole sentence, "Une crème brûlée, s'il vous plaît.", scores cp1250,
   cp1252, cp1257 and iso8859-10 equally clean and comes back as cp1250 "crčme brűlée"). Preferring windows-1252
   in such a tie would trade it for the cp1250 texts of `tests/corpus/test_corpus_published.py`.
A file that none of these decode (binary data, or bytes no encoding explains) raises `UndecodableDocument`
naming the file: the caller reports and skips it rather than indexing mojibake.
"""

from __future__ import annotations

import codecs
import unicodedata
from pathlib import Path

_BOMS = (  # UTF-32 first: its little-endian mark starts with UTF-16's.
    (codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be"), (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"),
)

#: WHATWG label -> the Python codec that decodes like a browser (only where they differ from Python's own).
_WHATWG = {
    **dict.fromkeys(("iso-8859-1", "iso8859-1", "latin1", "latin-1", "l1", "us-ascii", "ascii", "ansi_x3.4-1968",
                     "cp819", "ibm819", "windows-1252", "cp1252", "x-cp1252"), "cp1252"),
    **dict.fromkeys(("shift_jis", "shift-jis", "sjis", "x-sjis", "ms_kanji", "ms932", "windows-31j", "csshiftjis",
                     "cp932"), "cp932"),
    **dict.fromkeys(("gb2312", "gbk", "x-gbk", "chinese", "csgb2312", "gb_2312-80", "iso-ir-58"), "gb18030"),
    **dict.fromkeys(("euc-kr", "ks_c_5601-1987", "ks_c_5601-1989", "ksc5601", "windows-949", "cseuckr"), "cp949"),
    **dict.fromkeys(("big5", "big5-hkscs", "cn-big5", "x-x-big5"), "big5hkscs"),
    **dict.fromkeys(("iso-8859-9", "latin5", "l5", "windows-1254"), "cp1254"),
    **dict.fromkeys(("tis-620", "iso-8859-11", "windows-874"), "cp874"),
    # A page cannot declare UTF-16 in its own (ASCII-compatible) text; browsers read such a page as UTF-8.
    **dict.fromkeys(("utf-16", "utf-16le", "utf-16be"), "utf-8"),
}

#: Share of control characters (other than tab, newline, carriage return, form feed) above which text is binary.
MAX_CONTROL_SHARE = 0.01


class UndecodableDocument(ValueError):
    """A file whose bytes no declared or detected encoding turns into text."""

    def __init__(self, path: Path | str, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: cannot be decoded as text ({reason}); skipped")


def _codec(label: str | None) -> str | None:
    if not label:
        return None
    label = label.strip().lower()
    name = _WHATWG.get(label, label)
    try:
        return codecs.lookup(name).name
    except LookupError:
        return None


def _looks_binary(text: str) -> bool:
    if not text:
        return False
    controls = sum(1 for ch in text if ord(ch) < 32 and ch not in "\t\n\r\f" or ch == "\x7f")
    return controls / len(text) > MAX_CONTROL_SHARE


def declared_encoding(data: bytes) -> str | None:
    """The encoding an HTML/XML document declares in its first bytes (a Python codec name), or None."""
    from bs4.dammit import EncodingDetector

    return _codec(EncodingDetector.find_declared_encoding(data, is_html=True, search_entire_document=False))


def decode_bytes(data: bytes, html: bool = False, name: str | Path = "<bytes>") -> tuple[str, str]:
    """(text, codec used). Raises `UndecodableDocument` when no step yields plausible text."""
    for bom, codec in _BOMS:
        if data.startswith(bom):
            try:
                text = data[len(bom):].decode(codec)
            except UnicodeDecodeError as err:
                raise UndecodableDocument(name, f"it starts with a {codec} byte-order mark but is not {codec}: "
                                                f"{err.reason} at byte {err.start}") from None
            return text, codec
    if html:
        declared = declared_encoding(data)
        if declared:
            try:
                text = data.decode(declared)
                if not _looks_binary(text):
                    return text, declared
            except UnicodeDecodeError:
                pass  # the declaration is wrong; detect instead
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        if _looks_binary(text):
            raise UndecodableDocument(name, "it holds binary data")
        return text, "utf-8"
    from charset_normalizer import from_bytes

    best = from_bytes(data).best()
    if best is None:
        raise UndecodableDocument(name, "no text encoding explains its bytes")
    text, codec = str(best), best.encoding
    western = _windows_1252_over_other_script(data, text, best.chaos)
    if western is not None:
        text, codec = western, "cp1252"
    if _looks_binary(text):
        raise UndecodableDocument(name, "it holds binary data")
    return text, codec


def _windows_1252_over_other_script(data: bytes, detected: str, chaos: float) -> str | None:
    """`data` read as windows-1252 where the `detected` text has letters of another script than Latin, the
    windows-1252 text has none, and it is no messier by charset-normalizer's own measure (`mess_ratio` <= the
    detection's `chaos`); else None."""
    from charset_normalizer.md import mess_ratio

    try:
        text = data.decode("cp1252")
    except UnicodeDecodeError:  # a byte windows-1252 leaves undefined (0x81, 0x8d, 0x8f, 0x90, 0x9d)
        return None
    if not _other_script(detected) or _other_script(text) or mess_ratio(text, 1.0) > chaos:
        return None
    return text


def _other_script(text: str) -> bool:
    """Whether `text` has a letter outside ASCII that is not a Latin one (CJK, Cyrillic, Greek, Arabic...)."""
    return any(ord(ch) > 127 and ch.isalpha() and not unicodedata.name(ch, "").startswith("LATIN") for ch in text)
