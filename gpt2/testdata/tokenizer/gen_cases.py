#!/usr/bin/python3
"""Reference goldens for gpt2/tokenizer*.go, made without any Go code.

Reference (a): an encoder.py-equivalent written from GPT-2's published algorithm
(openai/gpt-2 src/encoder.py): the `regex` module's findall with GPT-2's pattern,
the byte-to-unicode table, and BPE by merge rank, where each round merges every
occurrence of the lowest-ranked pair left to right. Reference (b) (npm js-tiktoken
and gpt-3-encoder) is added to the same files afterwards by js_reference.cjs.

Exact commands (from gpt2/testdata/tokenizer/; see generate.sh, which runs all):

    apt-get install -y python3-regex        # Debian's regex 2022.10.31 (Unicode 15.0)
    /usr/bin/python3 gen_cases.py           # writes cases.json random.json classes.json
                                            # gpt2-tokenizer.json.gz toy/ weird/

Use /usr/bin/python3 (Debian), not a pip `regex`: newer regex releases follow
Unicode 16/17 and classify ~9.6k more code points as \\p{L}, while Go 1.26's
unicode tables (and Debian's regex) are Unicode 15.0.

Invalid UTF-8 cannot live in a Python str, so byte inputs are decoded with
errors="surrogateescape": every invalid byte becomes one lone surrogate
U+DC80..U+DCFF, which is neither \\s, \\p{L} nor \\p{N}, so it takes part in the
regex as a "punctuation" character; each piece is encoded back to its original
bytes. The Go tokenizer implements the same rule.
"""

import argparse
import gzip
import io
import json
import os
import random
import unicodedata

import regex

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.normpath(os.path.join(HERE, "..", "..", "..", "..", "shared", "data"))

PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
PAT = regex.compile(PATTERN)
EOT = "<|endoftext|>"


def bytes_to_unicode():
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
          + list(range(ord("®"), ord("ÿ") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


BYTE_ENCODER = bytes_to_unicode()
BYTE_DECODER = {v: k for k, v in BYTE_ENCODER.items()}


def get_pairs(word):
    return set(zip(word, word[1:]))


class Encoder:
    """GPT-2's encoder.py algorithm (vocab by token string, BPE by merge rank)."""

    def __init__(self, vocab, merges):
        self.encoder = vocab
        self.decoder = {v: k for k, v in vocab.items()}
        # Like encoder.py's dict(zip(...)): a repeated merge keeps its last rank.
        self.bpe_ranks = dict(zip(merges, range(len(merges))))
        self.cache = {}

    def bpe(self, token):
        if token in self.cache:
            return self.cache[token]
        word = tuple(token)
        pairs = get_pairs(word)
        if not pairs:
            return token
        while True:
            bigram = min(pairs, key=lambda p: self.bpe_ranks.get(p, float("inf")))
            if bigram not in self.bpe_ranks:
                break
            first, second = bigram
            new_word = []
            i = 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                    new_word.extend(word[i:j])
                    i = j
                except ValueError:
                    new_word.extend(word[i:])
                    break
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    new_word.append(first + second)
                    i += 2
                else:
                    new_word.append(word[i])
                    i += 1
            word = tuple(new_word)
            if len(word) == 1:
                break
            pairs = get_pairs(word)
        out = " ".join(word)
        self.cache[token] = out
        return out

    def encode(self, text):
        """text is a str; lone surrogates U+DC80..U+DCFF stand for invalid bytes."""
        ids = []
        for piece in PAT.findall(text):
            raw = piece.encode("utf-8", "surrogateescape")
            token = "".join(BYTE_ENCODER[b] for b in raw)
            ids.extend(self.encoder[t] for t in self.bpe(token).split(" "))
        return ids

    def encode_special(self, text):
        """<|endoftext|> as its id; the text between is encoded on its own."""
        parts = text.split(EOT)
        ids = self.encode(parts[0])
        for p in parts[1:]:
            ids.append(self.encoder[EOT])
            ids.extend(self.encode(p))
        return ids

    def decode_bytes(self, ids):
        return b"".join(bytes(BYTE_DECODER[c] for c in self.decoder[i]) for i in ids)


def load_files(vocab_path, merges_path):
    with open(vocab_path, encoding="utf-8") as f:
        vocab = json.load(f)
    with open(merges_path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    # encoder.py: bpe_data.split('\n')[1:-1] (first line is "#version: 0.2").
    merges = [tuple(line.split()) for line in lines[1:-1]]
    return vocab, merges


def nfd(s):
    return unicodedata.normalize("NFD", s)


def nfc(s):
    return unicodedata.normalize("NFC", s)


def hard_cases(corpus):
    """(name, str-or-bytes). bytes are inputs that are not valid UTF-8."""
    ws2000 = "".join(chr(c) for c in range(0x2000, 0x200B))
    c = [
        # whitespace
        ("empty", ""),
        ("one space", " "),
        ("two spaces", "  "),
        ("three spaces", "   "),
        ("hello world", "hello world"),
        ("two spaces between", "hello  world"),
        ("three spaces between", "hello   world"),
        ("trailing space", "hello world "),
        ("trailing three spaces", "hello world   "),
        ("leading space", " hello"),
        ("leading three spaces", "   hello"),
        ("newline", "\n"),
        ("two newlines", "\n\n"),
        ("paragraph break", "Hello\n\nWorld"),
        ("three newlines", "Hello\n\n\nWorld"),
        ("crlf lines", "line1\r\nline2\r\n"),
        ("crlf blank line", "a\r\n\r\nb"),
        ("tabs indent", "\tindented\n\t\tmore"),
        ("tab then space", "tab\t after"),
        ("mixed whitespace runs", "mixed \t \n  spaces\n \n"),
        ("space newline space", " \n x"),
        ("space newline end", "x \n"),
        ("trailing newline", "end\n"),
        ("trailing tabs", "trailing tabs\t\t"),
        ("space before digits and punct", "a  1  ,  b"),
        ("hundred spaces", " " * 100 + "x"),
        # contractions
        ("contractions", "it's don't I'm you're we've they'll he'd"),
        ("uppercase contractions", "IT'S DON'T I'M YOU'RE WE'VE THEY'LL HE'D"),
        ("lone contractions", "'s 'S 't 'T 're 'RE"),
        ("double apostrophe", "''s"),
        ("rock n roll", "rock'n'roll"),
        ("O'Neil's", "O'Neil's"),
        ("curly apostrophe", "it\u2019s John\u2019s"),
        ("contraction prefixes", "'sa 'lla 're' 'velvet"),
        ("contraction after punct", "don't' ?'s x's"),
        ("space apostrophe s", "the 's"),
        # Unicode whitespace
        ("nbsp", "a\u00a0b"),
        ("two nbsp", "a\u00a0\u00a0b"),
        ("ideographic space", "a\u3000b"),
        ("ideographic spaces before CJK", "\u3000\u3000日本"),
        ("NEL", "a\u0085b"),
        ("two NEL", "\u0085\u0085x"),
        ("NEL at end", "end\u0085"),
        ("BOM inside", "a\ufeffb"),
        ("BOM start", "\ufeffstart"),
        ("BOM between spaces", "a \ufeff b"),
        # U+0085 is \s for Python's regex but not for JavaScript; U+FEFF the reverse.
        ("BOM before contractions", "\ufeff's and \ufeff'll"),
        ("space BOM word", "a \ufeffb"),
        ("NEL before contraction", "x\u0085's"),
        ("NEL between punctuation", "?\u0085?"),
        ("space NEL", "a \u0085b"),
        ("line and paragraph separators", "a\u2028b\u2029c"),
        ("U+2000..U+200A", "x" + ws2000 + "y"),
        ("U+2000..U+200A spaced", "x " + " ".join(ws2000) + " y"),
        ("zero width space", "a\u200bb \u200b c"),
        ("narrow nbsp etc", "a\u202fb\u205fc\u1680d"),
        ("info separators 1C-1F", "a\x1c\x1d\x1e\x1fb"),
        ("vertical tab form feed", "\x0b\x0c vt ff"),
        ("space then nbsp", "a \u00a0b"),
        ("nbsp then space", "a\u00a0 b"),
        ("mongolian vowel separator", "a\u180eb"),
        # accents
        ("accents NFC", nfc("café naïve résumé")),
        ("accents NFD", nfd("café naïve résumé")),
        ("Angstrom Zurich NFD", nfd("Ångström Zürich")),
        ("stacked combining marks", "e\u0301\u0301\u0301 o\u0308"),
        ("Vietnamese NFC", nfc("Tiếng Việt")),
        ("Vietnamese NFD", nfd("Tiếng Việt")),
        # scripts
        ("Japanese", "日本語のテキストです。"),
        ("Chinese with punctuation", "中文，标点！"),
        ("Korean", "한국어 텍스트"),
        ("Korean NFD jamo", nfd("한국어")),
        ("Cyrillic", "Привет, мир!"),
        ("Arabic", "مرحبا بالعالم"),
        ("Hebrew", "שלום עולם"),
        ("Devanagari", "हिन्दी भाषा"),
        ("Thai", "ภาษาไทย"),
        ("Greek", "Ελληνικά γράμματα"),
        # emoji
        ("thumbs up", "👍"),
        ("skin tone", "👍🏽"),
        ("ZWJ family", "👨\u200d👩\u200d👧\u200d👦"),
        ("rainbow flag", "🏳\ufe0f\u200d🌈"),
        ("regional indicators", "🇺🇸🇯🇵"),
        ("emoji in text", "I ❤️ Go 🚀🚀🚀"),
        ("emoji after space", "nice 😀 work"),
        # code
        ("Go code", 'func main() {\n\tfmt.Println("hi")\n\tif x != nil {\n\t\treturn\n\t}\n}\n'),
        ("Python code", "def f(x):\n    if x:\n        return x ** 2\n    return None\n"),
        ("C-ish operators", "if (x != y) { return a->b; } // done"),
        ("JSON", '{"key": [1, 2.5, "three"], "nested": {"a": null}}'),
        ("URL", "https://example.com/path/to?q=1&r=two#frag"),
        ("email", "user.name+tag@example.co.uk"),
        ("Windows path", "C:\\Users\\name\\file.txt"),
        ("HTML", '<div class="x">Hello&nbsp;world</div>'),
        ("markdown", "# Title\n\n- item **bold** _it_\n\n```go\nx := 1\n```\n"),
        # long words
        ("long word", "Pneumonoultramicroscopicsilicovolcanoconiosis"),
        ("300 a", "a" * 300),
        ("repeated long word", "supercalifragilisticexpialidocious" * 5),
        ("long digit run", "1234567890" * 20),
        # punctuation
        ("question marks", "!!!???..."),
        ("dashes", "....—–-- -- —"),
        ("interrobang", "Wait... what?!?!"),
        ("equals run", "=========="),
        ("parentheses", "(((nested)))"),
        ("Spanish punctuation", "¡¿Qué?!"),
        ("quotes", "\"double\" 'single' «guillemets» „low“"),
        ("space punct", " . , ; :"),
        # control characters
        ("NUL SOH STX", "\x00\x01\x02"),
        ("NUL inside", "a\x00b"),
        ("DEL and C1", "\x7f\u0080\u009f"),
        ("ANSI escape", "bell\x07 esc\x1b[31mred\x1b[0m"),
        ("backspace", "ab\x08c"),
        # numbers
        ("twenty digits", "12345678901234567890"),
        ("decimals", "3.14159 -2.5e10 1,000,000"),
        ("Unicode numerals", "Ⅻ ½ ² ٣٤ ४२ ⑦"),
        ("timestamp", "2023-10-01T12:00:00Z"),
        ("space number", " 42 apples and 7 pears"),
        ("number letter mix", "abc123def 4th 1st"),
        # mixed scripts
        ("Latin CJK Cyrillic digits", "Hello世界Привет123"),
        ("Latin Greek", "abcαβγ"),
        ("mixed with accents", "mañana123abc"),
        ("fullwidth", "ＡＢＣ１２３！"),
        # special token text
        ("endoftext alone", EOT),
        ("endoftext inside", "Hello" + EOT + "World"),
        ("endoftext spaced", "a " + EOT + " b " + EOT),
        ("endoftext twice", EOT + EOT),
        ("endoftext newline", "doc one\n" + EOT + "\ndoc two"),
        ("endoftext partial", "<|endoftext|"),
        ("endoftext uppercase", "<|ENDOFTEXT|>"),
        # known answers
        ("language model prompt", "Hello, I'm a language model,"),
        ("Michael Jordan", "Michael Jordan plays the sport of basketball"),
        # invalid UTF-8 (Python: surrogateescape; see module doc)
        ("invalid FF", b"\xff"),
        ("invalid inside word", b"abc\xffdef"),
        ("truncated 2-byte at end", b"caf\xc3"),
        ("truncated 3-byte then x", b"\xe2\x82x"),
        ("encoded surrogate", b"\xed\xa0\x80"),
        ("overlong slash", b"\xc0\xaf"),
        ("invalid between spaces", b"hello \xff\xfe world"),
        ("space continuation byte", b" \x80abc"),
        ("above U+10FFFF", b"\xf4\x90\x80\x80"),
        ("invalid after letter", b"a\xff b"),
        ("truncated emoji", b"\xf0\x9f\x98"),
        ("invalid then newline", b"x\xff\n\ny"),
        ("invalid before contraction", b"\xff's"),
    ]
    # A few paragraphs from the corpus (line endings are \n only there).
    for name, start, n in [("shakespeare opening", 0, 1500),
                           ("shakespeare middle", 500000, 2500),
                           ("shakespeare end", len(corpus) - 1200, 1200)]:
        c.append((name, corpus[start:start + n]))
    return c


ATOMS = [
    " ", "  ", "\n", "\r\n", "\t", "\u00a0", "\u3000", "\u0085", "\ufeff", "\u200b",
    "\u2028", "\u2009", "\x0b", "\x1c", "'", "'s", "'S", "'ll", "'re", "'d", "'T",
    "a", "Z", "é", "e\u0301", "ß", "日", "本", "한", "я", "ا", "😀", "👍🏽", "\u200d",
    "\ufe0f", "1", "23", "٣", "½", "Ⅻ", ".", ",", "!", "?", "-", "_", "…", "—",
    EOT, "<|", "\x00", "\x1f", "\x7f", "word", " the", "ing", "Hello", " world",
    "http://", "\\", "{", "}", "\"", "$", "€", "™",
]


def random_cases(n, seed):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        k = rng.randint(0, 24)
        out.append(("random %d" % i, "".join(rng.choice(ATOMS) for _ in range(k))))
    # Byte strings mixing ASCII with arbitrary high bytes (mostly invalid UTF-8).
    pool = list(b" \n\ta'sS1.") + list(range(0x80, 0x100))
    for i in range(n // 5):
        k = rng.randint(1, 16)
        b = bytes(rng.choice(pool) for _ in range(k))
        try:
            out.append(("random bytes %d" % i, b.decode("utf-8")))
        except UnicodeDecodeError:
            out.append(("random bytes %d" % i, b))
    return out


def case_record(enc, name, value):
    rec = {"name": name}
    if isinstance(value, bytes):
        try:
            value.decode("utf-8")
            raise SystemExit("case %r: bytes input is valid UTF-8; use a str" % name)
        except UnicodeDecodeError:
            pass
        rec["hex"] = value.hex()
        text = value.decode("utf-8", "surrogateescape")
    else:
        rec["text"] = value
        text = value
    rec["python"] = enc.encode(text)
    if EOT in text:
        rec["python_special"] = enc.encode_special(text)
    raw = value if isinstance(value, bytes) else value.encode("utf-8")
    if enc.decode_bytes(rec["python"]) != raw:
        raise SystemExit("case %r: reference round trip failed" % name)
    return rec


def write_json(path, obj):
    """ASCII JSON; a "cases" list is written one case per line for readable diffs."""
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="ascii") as f:
        if isinstance(obj, dict) and "cases" in obj:
            head = {k: v for k, v in obj.items() if k != "cases"}
            f.write("{\n")
            for k, v in head.items():
                f.write(" %s: %s,\n" % (json.dumps(k), json.dumps(v, ensure_ascii=True)))
            f.write(' "cases": [\n')
            f.write(",\n".join("  " + json.dumps(c, ensure_ascii=True) for c in obj["cases"]))
            f.write("\n ]\n}\n")
        else:
            json.dump(obj, f, ensure_ascii=True, indent=1)
            f.write("\n")
    os.replace(tmp, path)


def write_text(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(text)
    os.replace(tmp, path)


def hf_tokenizer_json(vocab, merges, eot_id, merges_as_pairs):
    """A tokenizer.json laid out like Hugging Face's GPT-2 one."""
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                  "use_regex": True}
    added = []
    if eot_id is not None:
        added.append({"id": eot_id, "content": EOT, "single_word": False, "lstrip": False,
                      "rstrip": False, "normalized": True, "special": True})
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": byte_level,
        "post_processor": dict(byte_level, trim_offsets=False),
        "decoder": byte_level,
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": "",
            "end_of_word_suffix": "",
            "fuse_unk": False,
            "byte_fallback": False,
            "vocab": vocab,
            "merges": [list(m) if merges_as_pairs else " ".join(m) for m in merges],
        },
    }


def train_toy(text, n_merges):
    """Tiny BPE trainer: byte tokens in byte order, then the most frequent pair of
    each round (ties: smallest pair), the way a toy model's own vocab is built."""
    vocab = {BYTE_ENCODER[b]: b for b in range(256)}
    words = {}
    for piece in PAT.findall(text):
        w = tuple(BYTE_ENCODER[b] for b in piece.encode("utf-8"))
        words[w] = words.get(w, 0) + 1
    merges = []
    for _ in range(n_merges):
        counts = {}
        for w, n in words.items():
            for p in zip(w, w[1:]):
                counts[p] = counts.get(p, 0) + n
        if not counts:
            break
        best = min(counts, key=lambda p: (-counts[p], p))
        merges.append(best)
        vocab[best[0] + best[1]] = len(vocab)
        new_words = {}
        for w, n in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(w[i] + w[i + 1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            new_words[tuple(out)] = new_words.get(tuple(out), 0) + n
        words = new_words
    vocab[EOT] = len(vocab)
    return vocab, merges


def write_vocab_merges(folder, vocab, merges):
    os.makedirs(folder, exist_ok=True)
    write_json(os.path.join(folder, "vocab.json"), vocab)
    write_text(os.path.join(folder, "merges.txt"),
               "#version: 0.2\n" + "".join("%s %s\n" % m for m in merges))


def class_ranges():
    """Code points the regex module puts in \\s, \\p{L}, \\p{N}, as [lo, hi] ranges."""
    out = {}
    for name, pat in [("s", r"\s"), ("L", r"\p{L}"), ("N", r"\p{N}")]:
        p = regex.compile(pat)
        ranges = []
        for cp in range(0x110000):
            if 0xD800 <= cp <= 0xDFFF or not p.match(chr(cp)):
                continue
            if ranges and ranges[-1][1] == cp - 1:
                ranges[-1][1] = cp
            else:
                ranges.append([cp, cp])
        out[name] = ranges
    return out


def tiktoken_style_bpe(vocab, token):
    """tiktoken's merge loop: repeatedly merge the adjacent pair whose
    concatenation has the lowest id (leftmost on ties), pairs not in merges.txt
    included. gpt-3-encoder's "a,b" pair keys amount to the same thing."""
    parts = list(token)
    while len(parts) > 1:
        best = None
        for i in range(len(parts) - 1):
            r = vocab.get(parts[i] + parts[i + 1])
            if r is not None and r != vocab.get(EOT) and (best is None or r < best[0]):
                best = (r, i)
        if best is None:
            break
        i = best[1]
        parts[i:i + 2] = [parts[i] + parts[i + 1]]
    return " ".join(parts)


def compare_bpe_variants(enc, corpus, n_random, seed):
    """Why the JavaScript references can only differ in the regex: for GPT-2's
    merges, encoder.py's BPE and tiktoken's give the same tokens."""
    vocab = enc.encoder
    unreachable = [t for t in vocab if t != EOT and enc.bpe(t) != t]
    print("vocabulary tokens that their own BPE does not produce:", len(unreachable))
    rng = random.Random(seed)
    alphabet = "\",[]{}()'.:;-_=+*&^%$#@!?/\\|<>~`"
    pieces = set(PAT.findall(corpus))
    for _ in range(n_random):
        pieces.add("".join(rng.choice(alphabet) for _ in range(rng.randint(2, 8))))
    diff = [p for p in pieces
            if enc.bpe("".join(BYTE_ENCODER[b] for b in p.encode("utf-8"))) !=
            tiktoken_style_bpe(vocab, "".join(BYTE_ENCODER[b] for b in p.encode("utf-8")))]
    print("pieces (Tiny Shakespeare + %d random punctuation strings): %d, encoder.py vs "
          "tiktoken-style BPE differ on %d" % (n_random, len(pieces), len(diff)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=DATA, help="folder with gpt2-tokenizer/ and corpus/")
    ap.add_argument("--compare-bpe", action="store_true",
                    help="only compare encoder.py's BPE with tiktoken's on GPT-2's merges (slow)")
    args = ap.parse_args()

    vocab, merges = load_files(os.path.join(args.data, "gpt2-tokenizer", "vocab.json"),
                               os.path.join(args.data, "gpt2-tokenizer", "merges.txt"))
    enc = Encoder(vocab, merges)
    with open(os.path.join(args.data, "corpus", "tinyshakespeare.txt"), encoding="utf-8") as f:
        corpus = f.read()
    if args.compare_bpe:
        compare_bpe_variants(enc, corpus, 200000, seed=1)
        return

    meta = {
        "reference_a": "gen_cases.py: GPT-2 encoder.py algorithm, regex %s (%s)" % (
            regex.__version__, regex.__file__),
        "pattern": PATTERN,
        "invalid_utf8": "hex inputs: decoded with surrogateescape, one lone surrogate per invalid byte",
    }
    cases = [case_record(enc, n, v) for n, v in hard_cases(corpus)]
    write_json(os.path.join(HERE, "cases.json"), dict(meta, cases=cases))
    rnd = [case_record(enc, n, v) for n, v in random_cases(1500, seed=20240607)]
    write_json(os.path.join(HERE, "random.json"), dict(meta, cases=rnd))

    write_json(os.path.join(HERE, "classes.json"),
               {"regex": regex.__version__, "classes": class_ranges()})

    # Full GPT-2 tokenizer.json (merges as [a, b] pairs, the tokenizers>=0.20 layout),
    # gzipped with a fixed mtime so regenerating gives the same bytes.
    tj = json.dumps(hf_tokenizer_json(vocab, merges, vocab[EOT], True), ensure_ascii=False)
    buf = io.BytesIO()
    with gzip.GzipFile(filename="tokenizer.json", mode="wb", fileobj=buf, mtime=0) as gz:
        gz.write(tj.encode("utf-8"))
    with open(os.path.join(HERE, "gpt2-tokenizer.json.gz.tmp"), "wb") as f:
        f.write(buf.getvalue())
    os.replace(os.path.join(HERE, "gpt2-tokenizer.json.gz.tmp"),
               os.path.join(HERE, "gpt2-tokenizer.json.gz"))

    # Toy vocabulary: 256 byte tokens in byte order + 40 merges learned from a
    # corpus slice + <|endoftext|>. Written as vocab.json+merges.txt and as a
    # tokenizer.json with the older "a b" string merges.
    toy_vocab, toy_merges = train_toy(corpus[:20000], 40)
    toy_dir = os.path.join(HERE, "toy")
    write_vocab_merges(toy_dir, toy_vocab, toy_merges)
    write_json(os.path.join(toy_dir, "tokenizer.json"),
               hf_tokenizer_json(toy_vocab, toy_merges, toy_vocab[EOT], False))
    toy = Encoder(toy_vocab, toy_merges)
    toy_texts = [("toy " + n, v) for n, v in hard_cases(corpus)]
    write_json(os.path.join(toy_dir, "cases.json"),
               {"reference_a": meta["reference_a"],
                "cases": [case_record(toy, n, v) for n, v in toy_texts]})

    # "Weird" merges that a trained list never has: a pair ranked below the merge
    # that creates its left part ("ab a" before "a b"), and a repeated line (the
    # later rank wins, as in encoder.py's dict). encoder.py merges every "a b" in
    # a round before it can see "ab a"; a plain priority queue would not.
    weird_vocab = {BYTE_ENCODER[b]: b for b in range(256)}
    weird_merges = [("ab", "a"), ("a", "b"), ("b", "c"), ("c", "d"), ("b", "c")]
    for m in weird_merges:
        weird_vocab.setdefault(m[0] + m[1], len(weird_vocab))
    weird_dir = os.path.join(HERE, "weird")
    write_vocab_merges(weird_dir, weird_vocab, weird_merges)
    weird = Encoder(weird_vocab, weird_merges)
    weird_texts = [("weird " + t, t) for t in
                   ["abab", "ababab", "aabab", "abcd", "bcd", "abcabc", "cdbc", "xababx"]]
    write_json(os.path.join(weird_dir, "cases.json"),
               {"reference_a": meta["reference_a"],
                "cases": [case_record(weird, n, v) for n, v in weird_texts]})

    print("cases.json: %d cases, random.json: %d, toy: %d merges" % (
        len(cases), len(rnd), len(toy_merges)))


if __name__ == "__main__":
    main()
