"""The native tokenizer (kernels/engine/tok_*.c) against HF `tokenizers`.

Both real tokenizers (SmolLM2: byte-level BPE + Digits; Gemma 3: SentencePiece
BPE with byte fallback and ~6k added tokens), on >= 1,000 lines each, made
deterministically from a seed and real text (nano_runtime.data): prose, code,
whitespace runs, accents (NFC and NFD), CJK, emoji (ZWJ, flags, skin tones),
other scripts, numbers in several scripts, control-token and user-token text,
characters outside the vocabulary (byte fallback). Ids must be identical, with
special=False and special=True, and decoding must give the text back.
Runtime: ~25 s (most of it loading the two HF tokenizers).
"""
import random
import unicodedata

import pytest

from nano_runtime.data import english_text
from nano_runtime.loader import load_tokenizer
from nano_runtime.native_tokenizer import NANO_TOK_BYTE_BPE, NativeTokenizer

SEED = 1234
N_LINES = 1200

SCRIPTS = [
    "Ελληνικά γράμματα και λέξεις", "русский текст, Ёлка и щука", "עברית נכתבת מימין לשמאל",
    "العربية: مرحبا بالعالم", "हिन्दी में लिखा गया वाक्य", "ภาษาไทยไม่มีช่องว่าง", "한국어 문장입니다",
    "日本語のテキストとカタカナ", "中文句子，包括标点。", "ქართული ენა", "Հայերեն", "ᚠᚢᚦᚨᚱᚲ runes",
    "Tiếng Việt có dấu", "Türkçe İstanbul ığüşöç", "Ꭰ Cherokee ᏣᎳᎩ", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝕞𝕒𝕥𝕙",
]
EMOJI = ["🎉", "👍🏽", "👨‍👩‍👧‍👦", "🇫🇷🇯🇵", "❤️", "🤖", "🙂🙃", "☕", "🧑🏿‍🚀", "✨✨✨"]
NUMBERS = ["12345", "3.14159", "1,000,000", "0x1F", "١٢٣٤", "²³", "½ ¾", "Ⅻ ⅷ", "٣.٥", "007",
           "9th", "2024-05-17", "1e-9", "१२३"]
CODE = ["def f(x):\n    return x**2  # square", "for (int i = 0; i < n; ++i) { a[i] += b[i]; }",
        "if x != None and y >= 3:", "SELECT * FROM t WHERE id=42;", "{\"key\": [1, 2, 3]}",
        "<div class=\"a\">text</div>", "x = y->z; // ptr", "$ ls -la | grep '.py'",
        "<table><tr><td>1</td></tr></table>", "λx. x + 1", "std::vector<int> v{1,2};"]
SPACES = [" ", "  ", "   ", "\t", "\t\t", "\n", "\n\n", "\n\n\n", "\r\n", " \n ", "\u00a0",
          "\u3000", "\u2003\u2009", "\x0b", "\x0c", "\x1c", "\u200b", "\u0085", "    \n    "]
ACCENTS = ["café", "naïve", "façade", "Ångström", "São Paulo", "crème brûlée", "Zürich", "Łódź",
           "ñandú", "ﬁnancial ﬂow"]
CONTRACTIONS = ["it's", "we're", "they've", "I'm", "you'll", "he'd", "DON'T", "'s", "''s", "o'clock"]
SPECIAL = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<start_of_turn>", "<end_of_turn>",
           "<bos>", "<eos>", "<pad>", "<unused7>", "<h1>", "</td>", "[multimodal]", "<img>"]
RARE = ["\ue000", "\U0010fffd", "\U00020000\U0002a6d6", "\u0378", "\U0001f9ff", "\u2581", "▁▁x",
        "\x00", "\x7f", "\ufeff", "\ufffd", "Ġ", "ĊĠ"]


def varied_lines(seed=SEED, n=N_LINES):
    rng = random.Random(seed)
    prose = [ln for ln in english_text("all").splitlines() if ln.strip()]
    pools = [SCRIPTS, EMOJI, NUMBERS, CODE, SPACES, ACCENTS, CONTRACTIONS, SPECIAL, RARE]
    lines = []
    for i in range(n):
        kind = i % 4
        if kind == 0:  # real prose as is
            line = rng.choice(prose)
        elif kind == 1:  # prose with fragments spliced in
            words = rng.choice(prose).split(" ")
            for _ in range(rng.randint(1, 4)):
                words.insert(rng.randint(0, len(words)), rng.choice(rng.choice(pools)))
            line = " ".join(words)
        elif kind == 2:  # a random mix of fragments and separators
            parts = [rng.choice(rng.choice(pools)) for _ in range(rng.randint(2, 10))]
            line = "".join(p + rng.choice(["", " ", "", "  ", "\n", ",", "."]) for p in parts)
        else:  # random code points from assorted blocks
            blocks = [(0x20, 0x7E), (0xA0, 0x24F), (0x370, 0x52F), (0x590, 0x6FF), (0x900, 0xDFF),
                      (0x3040, 0x30FF), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3), (0x1F300, 0x1FAFF),
                      (0x2000, 0x206F), (0x10000, 0x1007F)]
            chars = []
            for _ in range(rng.randint(1, 40)):
                lo, hi = rng.choice(blocks)
                chars.append(chr(rng.randint(lo, hi)))
                if rng.random() < 0.2:
                    chars.append(rng.choice(SPACES))
            line = "".join(chars)
        if rng.random() < 0.15:
            line = unicodedata.normalize("NFD", line)
        lines.append(line)
    return lines


@pytest.fixture(scope="module", params=["smollm2-135m-instruct", "gemma3-270m"])
def pair(request):
    tok = load_tokenizer(request.param)
    return tok, NativeTokenizer.from_tokenizer(tok)


def test_lines_are_varied():
    lines = varied_lines()
    text = "".join(lines)
    assert len(lines) >= 1000
    for probe in ["日", "🎉", "\t", "  ", "é", "\u0301", "ה", "١", "def ", "<|im_start|>"]:
        assert probe in text, probe


def test_ids_identical(pair):
    tok, nt = pair
    lines = varied_lines()
    bad = []
    for special in (False, True):
        for line in lines:
            want = tok.encode(line, add_bos=False, special=special)
            got = nt.encode(line, add_bos=False, special=special)
            if want != got:
                bad.append((special, line, want, got))
    assert not bad, f"{len(bad)} of {2 * len(lines)} differ; first: {bad[0]!r}"


def test_decode_round_trip(pair):
    tok, nt = pair
    for line in varied_lines(seed=SEED + 1, n=400):
        ids = nt.encode(line, add_bos=False)
        assert nt.decode(ids) == tok.decode(ids)
        if nt.kind == NANO_TOK_BYTE_BPE or "\u2581" not in line:  # SPM reads U+2581 as a space
            assert nt.decode(ids) == line


def test_bos_and_config(pair):
    tok, nt = pair
    assert nt.vocab_size == tok.vocab_size
    assert (nt.bos_id, nt.eos_id, nt.add_bos) == (tok.bos_id, tok.eos_id, tok.add_bos)
    assert nt.stop_ids == tok.stop_ids
    assert nt.encode("Hi there") == tok.encode("Hi there")  # the model's BOS rule
    assert nt.encode("Hi", add_bos=True)[0] == tok.bos_id


def test_pieces_concatenate_to_text(pair):
    tok, nt = pair
    line = "Streaming: café 日本 🎉 x²\n\tdone"
    ids = nt.encode(line, add_bos=False)
    assert b"".join(nt.piece(i) for i in ids).decode("utf-8") == line


@pytest.mark.parametrize("messages", [
    [{"role": "user", "content": "Hello!"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "  What is 2+2?\n"}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello, how can I help?"},
     {"role": "user", "content": "Tell me a joke 🎉"}],
])
def test_chat_template_matches_jinja(pair, messages):
    tok, nt = pair
    for gen in (True, False):
        assert nt.apply_chat(messages, gen) == tok.apply_chat_template(messages, gen)
    assert nt.encode(nt.apply_chat(messages), add_bos=False, special=True) == tok.encode_chat(messages)


def test_unsupported_and_malformed_are_errors():
    from nano_runtime.errors import NanoError
    with pytest.raises(NanoError, match="tokenizer.json"):
        NativeTokenizer('{"model": {"type": "BPE", "vocab": {"a": 0}', {})
    with pytest.raises(NanoError, match="unsupported"):
        NativeTokenizer('{"model": {"type": "WordPiece", "vocab": {"a": 0}}}', {})
    with pytest.raises(NanoError, match="outside the vocabulary"):
        NativeTokenizer('{"pre_tokenizer": {"type": "ByteLevel"}, "model": {"type": "BPE", '
                        '"vocab": {"a": 0}, "merges": [["a", "b"]]}}', {})


def test_streaming_never_splits_a_character(pair):
    """nano_detok_stream (the text API's streaming rule): one chunk per token, each
    valid UTF-8 holding whole characters; together they are the text."""
    tok, nt = pair
    split = 0
    for line in varied_lines(seed=SEED + 2, n=300):
        ids = nt.encode(line, add_bos=False)
        chunks = nt.stream_pieces(ids)
        assert len(chunks) == len(ids) + 1
        for c in chunks:
            c.decode("utf-8")  # raises if a character was split
        assert b"".join(chunks).decode("utf-8") == nt.decode(ids)
        split += sum(1 for i in ids if nt.piece(i) and not _valid(nt.piece(i)))
    assert split > 50  # the lines do have characters spread over several tokens
    # invalid and unfinished bytes come out as U+FFFD, never as broken UTF-8
    byte_ids = [i for i in range(nt.vocab_size) if len(nt.piece(i)) == 1 and nt.piece(i)[0] >= 0x80]
    lead = next(i for i in byte_ids if nt.piece(i) == b"\xe6")
    cont = next(i for i in byte_ids if nt.piece(i) == b"\x9c")
    for seq in ([lead, cont, lead, lead], [cont, lead, cont, cont, lead], [lead] * 3):
        chunks = nt.stream_pieces(seq)
        raw = b"".join(nt.piece(i) for i in seq)
        assert b"".join(chunks) == raw.decode("utf-8", errors="replace").encode()  # Python's rule
        assert chunks[-1] in (b"", b"\xef\xbf\xbd")


def _valid(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def test_unicode_tables_are_generated_from_unicodedata():
    """kernels/engine/tok_unicode_tables.c is what tools/gen_unicode_tables.py writes
    (compared when this Python has the same Unicode version as the committed file)."""
    import importlib.util
    import os
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = importlib.util.spec_from_file_location("gen", os.path.join(root, "tools",
                                                                      "gen_unicode_tables.py"))
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    with open(gen.OUT, encoding="utf-8") as f:
        committed = f.read()
    fresh = gen.generate()
    if f"(Unicode {unicodedata.unidata_version})" in committed:
        assert fresh == committed, "stale: rerun tools/gen_unicode_tables.py"
    else:  # another Unicode version: same structure, same three classes
        for name in ("nano_uc_letter", "nano_uc_number", "nano_uc_space"):
            assert name in committed and name in fresh
