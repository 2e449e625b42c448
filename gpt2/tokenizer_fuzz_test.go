package gpt2

import (
	"os"
	"path/filepath"
	"testing"
	"unicode/utf8"
)

// tokFuzzSeeds adds every golden input (and a few edge cases) to f's corpus.
func tokFuzzSeeds(f *testing.F) {
	for _, file := range []string{"cases.json", "random.json"} {
		for _, c := range tokReadCases(f, filepath.Join(tokTestdata, file)) {
			f.Add(c.input(f))
		}
	}
	for _, s := range []string{"", " ", "\xff", "'", "'s'", " \u0085", "\ufeff ", EndOfText + EndOfText} {
		f.Add(s)
	}
}

// FuzzTokenizerRoundTrip: Decode(Encode(x)) == x for valid UTF-8, with and
// without special tokens, and the BPE agrees with a direct transcription of
// encoder.py's loop on every piece.
func FuzzTokenizerRoundTrip(f *testing.F) {
	tk := tokLoadGPT2(f)
	tokFuzzSeeds(f)
	f.Fuzz(func(t *testing.T, s string) {
		if !utf8.ValidString(s) {
			t.Skip()
		}
		tokCheckInvariants(t, tk, "fuzz", s)
		back, err := tk.Decode(tk.EncodeSpecial(s))
		if err != nil || back != s {
			t.Fatalf("Decode(EncodeSpecial(%q)) = %q, %v", s, back, err)
		}
		tokCheckNaive(t, tk, s)
	})
}

// FuzzTokenizerBytes: arbitrary bytes (mostly invalid UTF-8) never panic, give
// ids inside the vocabulary, and still decode to the input.
func FuzzTokenizerBytes(f *testing.F) {
	tk := tokLoadGPT2(f)
	tokFuzzSeeds(f)
	f.Add("\xed\xa0\x80\xc0\xaf\xf4\x90\x80\x80")
	f.Fuzz(func(t *testing.T, s string) {
		tokCheckInvariants(t, tk, "fuzz", s)
		for _, id := range tk.EncodeSpecial(s) {
			if id < 0 || id >= tk.VocabSize() {
				t.Fatalf("EncodeSpecial(%q): id %d outside vocabulary", s, id)
			}
		}
		tokCheckNaive(t, tk, s)
	})
}

// FuzzTokenizerLoad: malformed vocab.json / merges.txt / tokenizer.json give
// errors, never panics, and whatever loads encodes within its vocabulary.
func FuzzTokenizerLoad(f *testing.F) {
	toy := filepath.Join(tokTestdata, "toy")
	vocab, err := os.ReadFile(filepath.Join(toy, "vocab.json"))
	if err != nil {
		f.Fatal(err)
	}
	merges, err := os.ReadFile(filepath.Join(toy, "merges.txt"))
	if err != nil {
		f.Fatal(err)
	}
	tj, err := os.ReadFile(filepath.Join(toy, "tokenizer.json"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(vocab, merges)
	f.Add(tj, merges)
	f.Add([]byte(`{"a": 0, "b": 1, "ab": 2}`), []byte("a b\n"))
	f.Add([]byte(`{"a": 0, "b": 1, "ab": 2}`), []byte("b a\n"))
	f.Add([]byte(`{"model": {"vocab": {"a": 0}, "merges": [["a", "a"]]}, "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false}}`), []byte(""))
	f.Fuzz(func(t *testing.T, a, b []byte) {
		for _, load := range []func() (*Tokenizer, error){
			func() (*Tokenizer, error) { return tokParseFiles(a, b, "merges.txt") },
			func() (*Tokenizer, error) { return tokParseHFJSON(a) },
		} {
			tk, err := load()
			if err != nil {
				continue
			}
			for _, s := range []string{"hello world", "a b ab  \n", string(b)} {
				for _, id := range tk.EncodeSpecial(s) {
					if id < 0 || id >= tk.VocabSize() {
						t.Fatalf("id %d outside vocabulary of %d", id, tk.VocabSize())
					}
				}
			}
		}
	})
}

// tokCheckNaive compares bpeEncodePiece with tokNaiveBPE on every piece of s.
func tokCheckNaive(t *testing.T, tk *Tokenizer, s string) {
	var sc bpeScratch
	for i := 0; i < len(s); {
		j := pretokNext(s, i)
		if j <= i || j > len(s) {
			t.Fatalf("pretokNext(%q, %d) = %d", s, i, j)
		}
		got, _, _ := tk.bpeEncodePiece(s[i:j], &sc, nil, nil, nil)
		want := tokNaiveBPE(tk, s[i:j])
		if len(got) != len(want) {
			t.Fatalf("piece %q: bpe %v, encoder.py loop %v", s[i:j], got, want)
		}
		for k := range got {
			if got[k] != want[k] {
				t.Fatalf("piece %q: bpe %v, encoder.py loop %v", s[i:j], got, want)
			}
		}
		i = j
	}
}

// tokNaiveBPE is encoder.py's bpe() transcribed onto ids: while some adjacent
// pair has a rank, merge every occurrence of the lowest-ranked one, left to right.
func tokNaiveBPE(tk *Tokenizer, piece string) []int32 {
	var word []int32
	for i := 0; i < len(piece); i++ {
		word = append(word, tk.byteID[piece[i]])
	}
	for len(word) > 1 {
		best := bpeMerge{rank: -1}
		var bl, br int32
		for i := 0; i+1 < len(word); i++ {
			m, ok := tk.merges[bpePairKey(word[i], word[i+1])]
			if ok && (best.rank < 0 || m.rank < best.rank) {
				best, bl, br = m, word[i], word[i+1]
			}
		}
		if best.rank < 0 {
			break
		}
		var next []int32
		for i := 0; i < len(word); i++ {
			if i+1 < len(word) && word[i] == bl && word[i+1] == br {
				next = append(next, best.id)
				i++
			} else {
				next = append(next, word[i])
			}
		}
		word = next
	}
	return word
}
