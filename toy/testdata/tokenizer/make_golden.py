#!/usr/bin/python3
"""Independent reference token ids for the toy vocabulary.

Run from this folder with Debian's python3 (needs the `regex` module):

    cd toy/testdata/tokenizer && /usr/bin/python3 make_golden.py

It reads vocab.json and merges.txt (written by
`go test ./toy -run TestVocabularyFiles -update`) and encodes texts with a
re-implementation of OpenAI's GPT-2 encoder.py (bytes_to_unicode, the
pre-tokenization regex, rank-ordered BPE merges), writing golden.json: a list
of {"text", "ids"}. The texts are every toy prompt shape (each first name,
each last name, each relation template), each answer with its leading space,
and some text outside the toy vocabulary, which must fall back to byte tokens.
"""
import json

import regex as re

FIRST = ["Michael", "Mary", "Marie", "Christian"]
LAST = ["Smith", "Washington", "Cross", "Lee"]
TEMPLATES = ["{first} {last} plays the sport of", "{first} {last} lives in the city of"]
EXTRA = ["Hello, world! 123", " naïve café\n\tend", "plays the sport of golf", "<|endoftext|>", "  two  spaces "]


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def get_pairs(word):
    return {(word[i], word[i + 1]) for i in range(len(word) - 1)}


class Encoder:
    def __init__(self, vocab, merges):
        self.encoder = vocab
        self.ranks = {tuple(m): i for i, m in enumerate(merges)}
        self.byte_encoder = bytes_to_unicode()
        self.pat = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")

    def bpe(self, token):
        word = tuple(token)
        pairs = get_pairs(word)
        if not pairs:
            return word
        while True:
            bigram = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if bigram not in self.ranks:
                break
            first, second = bigram
            new_word = []
            i = 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                except ValueError:
                    new_word.extend(word[i:])
                    break
                new_word.extend(word[i:j])
                i = j
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
        return word

    def encode(self, text):
        ids = []
        for piece in re.findall(self.pat, text):
            chars = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
            ids.extend(self.encoder[t] for t in self.bpe(chars))
        return ids


def main():
    with open("vocab.json", encoding="utf-8") as f:
        vocab = json.load(f)
    with open("merges.txt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    merges = [l.split(" ") for l in lines[1:] if l]
    enc = Encoder(vocab, merges)
    texts = []
    for t in TEMPLATES:
        for a in FIRST:
            for b in LAST:
                texts.append(t.replace("{first}", a).replace("{last}", b))
    with open("../../names.go", encoding="utf-8") as f:
        src = f.read()
    # Every quoted word of names.go, bare and with a leading space.
    words = re.findall(r'"([A-Za-z]+)"', src)
    for w in words:
        texts += [w, " " + w]
    texts += EXTRA
    out = [{"text": t, "ids": enc.encode(t)} for t in texts]
    with open("golden.json", "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=0)
        f.write("\n")


if __name__ == "__main__":
    main()
