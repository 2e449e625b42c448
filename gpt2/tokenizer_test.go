package gpt2

import (
	"compress/gzip"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"
)

// Goldens come from gen_cases.py (GPT-2's encoder.py algorithm with Debian's
// python3-regex) and js_reference.cjs (js-tiktoken and gpt-3-encoder); see
// testdata/tokenizer/README.md for the commands.
const (
	tokGPT2Dir    = "../../shared/data/gpt2-tokenizer"
	tokCorpusPath = "../../shared/data/corpus/tinyshakespeare.txt"
	tokTestdata   = "testdata/tokenizer"
)

type tokCase struct {
	Name              string `json:"name"`
	Text              *string
	Hex               string `json:"hex"`
	Python            []int  `json:"python"`
	PythonSpecial     []int  `json:"python_special"`
	JSTiktoken        []int  `json:"js_tiktoken"`
	JSTiktokenSpecial []int  `json:"js_tiktoken_special"`
	GPT3Encoder       []int  `json:"gpt3_encoder"`
	JS                string `json:"js"` // "agree": the JS ids equal Python's (random.json)
}

// input returns the case's text; hex cases hold bytes that are not UTF-8.
func (c tokCase) input(t testing.TB) string {
	if c.Text != nil {
		return *c.Text
	}
	b, err := hex.DecodeString(c.Hex)
	if err != nil {
		t.Fatalf("%s: bad hex: %v", c.Name, err)
	}
	return string(b)
}

func tokReadCases(t testing.TB, path string) []tokCase {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Cases []tokCase `json:"cases"`
	}
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return f.Cases
}

var (
	tokGPT2Once sync.Once
	tokGPT2     *Tokenizer
	tokGPT2Err  error
)

// tokLoadGPT2 loads GPT-2's tokenizer from ../shared/data once per test binary.
func tokLoadGPT2(t testing.TB) *Tokenizer {
	t.Helper()
	tokGPT2Once.Do(func() { tokGPT2, tokGPT2Err = LoadTokenizer(tokGPT2Dir) })
	if tokGPT2Err != nil {
		t.Fatalf("GPT-2 tokenizer files (shared test data): %v", tokGPT2Err)
	}
	return tokGPT2
}

// tokCheckCases compares Encode (and EncodeSpecial) with reference (a) and
// checks the properties every encoding must have.
func tokCheckCases(t *testing.T, tk *Tokenizer, cases []tokCase) {
	t.Helper()
	for _, c := range cases {
		text := c.input(t)
		got := tk.Encode(text)
		if !tokSameIDs(got, c.Python) {
			t.Errorf("%s: Encode(%q)\n got %v\nwant %v (encoder.py)", c.Name, tokClip(text), got, c.Python)
			continue
		}
		want := c.Python
		if c.PythonSpecial != nil {
			want = c.PythonSpecial
		}
		if got := tk.EncodeSpecial(text); !tokSameIDs(got, want) {
			t.Errorf("%s: EncodeSpecial(%q)\n got %v\nwant %v", c.Name, tokClip(text), got, want)
		}
		tokCheckInvariants(t, tk, c.Name, text)
	}
}

// tokCheckInvariants: ids in range, lossless decode, offsets tile the text.
func tokCheckInvariants(t testing.TB, tk *Tokenizer, name, text string) {
	t.Helper()
	ids, spans := tk.EncodeOffsets(text)
	if !tokSameIDs(ids, tk.Encode(text)) {
		t.Fatalf("%s: EncodeOffsets ids differ from Encode", name)
	}
	for _, id := range ids {
		if id < 0 || id >= tk.VocabSize() {
			t.Fatalf("%s: id %d outside vocabulary of %d", name, id, tk.VocabSize())
		}
	}
	back, err := tk.Decode(ids)
	if err != nil || back != text {
		t.Fatalf("%s: Decode(Encode(%q)) = %q, %v", name, tokClip(text), tokClip(back), err)
	}
	pos := 0
	for i, sp := range spans {
		if sp[0] != pos || sp[1] <= sp[0] || text[sp[0]:sp[1]] != tk.Token(ids[i]) {
			t.Fatalf("%s: token %d (%d %q) has span %v, want start %d and its bytes", name, i, ids[i], tk.Token(ids[i]), sp, pos)
		}
		pos = sp[1]
	}
	if pos != len(text) {
		t.Fatalf("%s: spans end at %d, text has %d bytes", name, pos, len(text))
	}
}

func tokSameIDs(a, b []int) bool {
	return len(a) == len(b) && (len(a) == 0 || reflect.DeepEqual(a, b))
}

func tokClip(s string) string {
	if len(s) > 60 {
		return s[:60] + "..."
	}
	return s
}

func TestTokenizerGoldenCases(t *testing.T) {
	tk := tokLoadGPT2(t)
	cases := tokReadCases(t, filepath.Join(tokTestdata, "cases.json"))
	if len(cases) < 80 {
		t.Fatalf("only %d golden cases", len(cases))
	}
	tokCheckCases(t, tk, cases)
}

func TestTokenizerRandomCases(t *testing.T) {
	tk := tokLoadGPT2(t)
	tokCheckCases(t, tk, tokReadCases(t, filepath.Join(tokTestdata, "random.json")))
}

// TestTokenizerJSReferences checks the claim in the README: the npm
// tokenizers agree with encoder.py except where JavaScript's \s differs from
// Python regex's \s (U+FEFF is whitespace in JavaScript, U+0085 is not).
func TestTokenizerJSReferences(t *testing.T) {
	n, disagree := 0, 0
	for _, file := range []string{"cases.json", "random.json"} {
		for _, c := range tokReadCases(t, filepath.Join(tokTestdata, file)) {
			if c.Text == nil {
				continue
			}
			if c.JS == "agree" {
				c.JSTiktoken, c.GPT3Encoder, c.JSTiktokenSpecial = c.Python, c.Python, c.PythonSpecial
			}
			if c.JSTiktoken == nil || c.GPT3Encoder == nil {
				t.Fatalf("%s %s: no js reference ids; run generate.sh", file, c.Name)
			}
			n++
			if !tokSameIDs(c.JSTiktoken, c.GPT3Encoder) {
				t.Errorf("%s: js-tiktoken and gpt-3-encoder differ", c.Name)
			}
			if c.PythonSpecial != nil && !tokSameIDs(c.JSTiktokenSpecial, c.PythonSpecial) &&
				!strings.ContainsAny(*c.Text, "\u0085\ufeff") {
				t.Errorf("%s: js-tiktoken special differs from encoder.py", c.Name)
			}
			if tokSameIDs(c.JSTiktoken, c.Python) {
				continue
			}
			disagree++
			if !strings.ContainsAny(*c.Text, "\u0085\ufeff") {
				t.Errorf("%s: js references differ from encoder.py without U+0085/U+FEFF: %q", c.Name, *c.Text)
			}
		}
	}
	t.Logf("%d text cases, JS references differ from encoder.py on %d (all U+0085/U+FEFF)", n, disagree)
}

func TestTokenizerKnownIDs(t *testing.T) {
	tk := tokLoadGPT2(t)
	if tk.VocabSize() != 50257 || tk.EOT() != 50256 {
		t.Fatalf("VocabSize %d EOT %d, want 50257 50256", tk.VocabSize(), tk.EOT())
	}
	// From ../shared/data/gpt2-tokenizer/README.md.
	for tok, want := range map[string]int{"Michael": 13256, " Jordan": 8078, " plays": 5341,
		" the": 262, " sport": 6332, " of": 286, EndOfText: 50256} {
		if id, ok := tk.ID(tok); !ok || id != want {
			t.Errorf("ID(%q) = %d, %v; want %d", tok, id, ok, want)
		}
		if got := tk.Token(want); got != tok {
			t.Errorf("Token(%d) = %q, want %q", want, got, tok)
		}
	}
	if _, ok := tk.ID("no such token"); ok {
		t.Error("ID of a non-token succeeded")
	}
	for _, id := range []int{-1, 50257, 1 << 40} {
		if tk.Token(id) != "" {
			t.Errorf("Token(%d) = %q, want empty", id, tk.Token(id))
		}
		if _, err := tk.Decode([]int{262, id}); err == nil {
			t.Errorf("Decode with id %d: no error", id)
		}
	}
	// 👍 is two tokens, [64 41840 235] by encoder.py; the first holds 3 of its 4 bytes.
	ids, spans := tk.EncodeOffsets("a👍")
	if !tokSameIDs(ids, []int{64, 41840, 235}) || spans[1] != [2]int{1, 4} || spans[2] != [2]int{4, 5} ||
		utf8.ValidString(tk.Token(ids[1])) {
		t.Errorf("EncodeOffsets(a👍) = %v %v", ids, spans)
	}
	// encoder.py: [5303 27 91 437 1659 5239 91 29 5303]; tiktoken with allowed_special: [5303 50256 5303].
	if got := tk.Encode("hi" + EndOfText + "hi"); len(got) != 9 {
		t.Errorf("Encode treats <|endoftext|> as special: %v", got)
	}
	if got := tk.EncodeSpecial("hi" + EndOfText + "hi"); !tokSameIDs(got, []int{5303, 50256, 5303}) {
		t.Errorf("EncodeSpecial = %v", got)
	}
}

// TestTokenizerJSONSameAsFiles loads the tokenizer.json that gen_cases.py wrote
// from vocab.json+merges.txt (Hugging Face layout, [a, b] merges) and checks it
// encodes every case like the vocab.json+merges.txt tokenizer.
func TestTokenizerJSONSameAsFiles(t *testing.T) {
	tk := tokLoadGPT2(t)
	f, err := os.Open(filepath.Join(tokTestdata, "gpt2-tokenizer.json.gz"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "tokenizer.json")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	fromDir, err := LoadTokenizer(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	tj, err := LoadTokenizerJSON(path)
	if err != nil {
		t.Fatal(err)
	}
	if tj.VocabSize() != tk.VocabSize() || tj.EOT() != tk.EOT() || fromDir.VocabSize() != tk.VocabSize() {
		t.Fatalf("tokenizer.json: VocabSize %d EOT %d", tj.VocabSize(), tj.EOT())
	}
	if !reflect.DeepEqual(tj.merges, tk.merges) || !reflect.DeepEqual(tj.tokens, tk.tokens) {
		t.Fatal("tokenizer.json gives other merges or tokens than vocab.json+merges.txt")
	}
	for _, file := range []string{"cases.json", "random.json"} {
		tokCheckCases(t, tj, tokReadCases(t, filepath.Join(tokTestdata, file)))
	}
}

// TestTokenizerToy: a toy model's own vocabulary (byte tokens in byte order,
// 40 merges), as vocab.json+merges.txt and as tokenizer.json with "a b" merges.
func TestTokenizerToy(t *testing.T) {
	dir := filepath.Join(tokTestdata, "toy")
	cases := tokReadCases(t, filepath.Join(dir, "cases.json"))
	files, err := LoadTokenizer(dir)
	if err != nil {
		t.Fatal(err)
	}
	tj, err := LoadTokenizerJSON(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tk := range []*Tokenizer{files, tj} {
		if tk.VocabSize() != 297 || tk.EOT() != 296 {
			t.Fatalf("toy VocabSize %d EOT %d, want 297 296", tk.VocabSize(), tk.EOT())
		}
		tokCheckCases(t, tk, cases)
	}
}

// TestTokenizerWeirdMerges: merges no trainer writes ("ab a" ranked before
// "a b", a repeated line). encoder.py finishes a rank before it considers the
// pairs that rank created; the repeated merge keeps its last rank.
func TestTokenizerWeirdMerges(t *testing.T) {
	dir := filepath.Join(tokTestdata, "weird")
	tk, err := LoadTokenizer(dir)
	if err != nil {
		t.Fatal(err)
	}
	tokCheckCases(t, tk, tokReadCases(t, filepath.Join(dir, "cases.json")))
}

// TestTokenizerClasses checks the character classes code point by code point
// against the regex module's \s, \p{L}, \p{N} (classes.json, from gen_cases.py).
func TestTokenizerClasses(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(tokTestdata, "classes.json"))
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Classes map[string][][2]rune `json:"classes"`
	}
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatal(err)
	}
	want := make(map[rune]pretokClass)
	for name, cls := range map[string]pretokClass{"s": pretokSpace, "L": pretokLetter, "N": pretokNumber} {
		if len(f.Classes[name]) == 0 {
			t.Fatalf("classes.json has no %q", name)
		}
		for _, r := range f.Classes[name] {
			for c := r[0]; c <= r[1]; c++ {
				if _, dup := want[c]; dup {
					t.Fatalf("U+%04X in two classes", c)
				}
				want[c] = cls
			}
		}
	}
	bad := 0
	for r := rune(0); r <= utf8.MaxRune; r++ {
		if 0xD800 <= r && r <= 0xDFFF {
			continue
		}
		w, ok := want[r]
		if !ok {
			w = pretokOther
		}
		if got, _ := pretokAt(string(r), 0); got != w {
			if bad++; bad <= 10 {
				t.Errorf("U+%04X: class %d, regex module says %d", r, got, w)
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d code points classified unlike the regex module", bad)
	}
	spaces := 0
	for _, r := range f.Classes["s"] {
		spaces += int(r[1] - r[0] + 1)
	}
	if spaces != 25 {
		t.Errorf("regex \\s has %d code points, want 25 (Unicode White_Space)", spaces)
	}
}

// TestTokenizerCorpus encodes all of Tiny Shakespeare and checks the invariants.
func TestTokenizerCorpus(t *testing.T) {
	tk := tokLoadGPT2(t)
	data, err := os.ReadFile(tokCorpusPath)
	if err != nil {
		t.Fatal(err)
	}
	tokCheckInvariants(t, tk, "tinyshakespeare", string(data))
}

func TestTokenizerConcurrent(t *testing.T) {
	tk := tokLoadGPT2(t)
	cases := tokReadCases(t, filepath.Join(tokTestdata, "cases.json"))
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, c := range cases {
				if got := tk.Encode(c.input(t)); !tokSameIDs(got, c.Python) {
					t.Errorf("%s: concurrent Encode differs", c.Name)
				}
			}
		}()
	}
	wg.Wait()
}

// TestTokenizerMissingBytes: a vocabulary without tokens for some bytes drops
// them, or maps them to unk_token (one per byte, or one per run with fuse_unk),
// as Hugging Face tokenizers does; encoder.py would raise KeyError.
func TestTokenizerMissingBytes(t *testing.T) {
	vocab := map[string]int{"a": 0, "b": 1, "ab": 2, "<unk>": 3}
	merges := []tokMergeLine{{left: "a", right: "b", where: "test"}}
	for _, tc := range []struct {
		unk       string
		fuse      bool
		want      []int
		wantSpans [][2]int
	}{
		{"", false, []int{2, 0}, [][2]int{{0, 2}, {4, 5}}},
		{"<unk>", false, []int{2, 3, 3, 0}, [][2]int{{0, 2}, {2, 3}, {3, 4}, {4, 5}}},
		{"<unk>", true, []int{2, 3, 0}, [][2]int{{0, 2}, {2, 4}, {4, 5}}},
	} {
		tk, err := tokBuild(vocab, merges, nil, tc.unk, tc.fuse, false)
		if err != nil {
			t.Fatal(err)
		}
		ids, spans := tk.EncodeOffsets("abcca")
		if !tokSameIDs(ids, tc.want) || !reflect.DeepEqual(spans, tc.wantSpans) {
			t.Errorf("unk %q fuse %v: %v %v, want %v %v", tc.unk, tc.fuse, ids, spans, tc.want, tc.wantSpans)
		}
		if tk.EOT() != -1 || !tokSameIDs(tk.EncodeSpecial("ab"+EndOfText), tk.Encode("ab"+EndOfText)) {
			t.Error("vocabulary without <|endoftext|>: EOT or EncodeSpecial wrong")
		}
	}
}

func TestTokenizerLoadErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	goodVocab := write("good.json", `{"a": 0, "b": 1, "ab": 2}`)
	goodMerges := write("good.txt", "#version: 0.2\na b\n")
	if _, err := LoadTokenizerFiles(goodVocab, goodMerges); err != nil {
		t.Fatalf("good files: %v", err)
	}
	for _, tc := range []struct {
		name, vocab, merges, want string
	}{
		{"missing vocab", filepath.Join(dir, "none.json"), goodMerges, "no such file"},
		{"missing merges", goodVocab, filepath.Join(dir, "none.txt"), "no such file"},
		{"vocab not JSON", write("v1.json", `{"a": 0,`), goodMerges, "vocab.json is not a JSON object"},
		{"vocab wrong type", write("v2.json", `["a"]`), goodMerges, "vocab.json is not a JSON object"},
		{"negative id", write("v3.json", `{"a": -1}`), goodMerges, "outside"},
		{"duplicate id", write("v4.json", `{"a": 0, "b": 0}`), goodMerges, "both have id 0"},
		{"not byte-level", write("v5.json", `{"a": 0, "日": 1}`), goodMerges, "byte-level"},
		{"empty vocab", write("v6.json", `{}`), goodMerges, "empty vocabulary"},
		{"merge one token", goodVocab, write("m1.txt", "#version: 0.2\na b\nab\n"), "line 3"},
		{"merge three tokens", goodVocab, write("m2.txt", "a b c\n"), "line 1"},
		{"merge unknown left", goodVocab, write("m3.txt", "x b\n"), `"x" is not in the vocabulary`},
		{"merge unknown right", goodVocab, write("m4.txt", "a y\n"), `"y" is not in the vocabulary`},
		{"merged token unknown", goodVocab, write("m5.txt", "b a\n"), `merged token "ba"`},
		{"merges not UTF-8", goodVocab, write("m6.txt", "a \xff\n"), "UTF-8"},
	} {
		_, err := LoadTokenizerFiles(tc.vocab, tc.merges)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want it to mention %q", tc.name, err, tc.want)
		}
	}

	if _, err := LoadTokenizer(filepath.Join(dir, "nothing-here")); err == nil || !strings.Contains(err.Error(), "neither") {
		t.Errorf("empty folder: %v", err)
	}

	okModel := `"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]}`
	okPre := `"pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false}`
	if _, err := LoadTokenizerJSON(write("ok.json", `{`+okPre+`, `+okModel+`}`)); err != nil {
		t.Fatalf("minimal tokenizer.json: %v", err)
	}
	for _, tc := range []struct{ name, body, want string }{
		{"truncated", `{"model": {`, "malformed JSON"},
		{"no model", `{` + okPre + `}`, `no "model"`},
		{"wordpiece", `{` + okPre + `, "model": {"type": "WordPiece", "vocab": {"a": 0}}}`, `"WordPiece" is not supported`},
		{"no vocab", `{` + okPre + `, "model": {"type": "BPE", "merges": []}}`, `no "vocab"`},
		{"vocab is list", `{` + okPre + `, "model": {"type": "BPE", "vocab": [["a", 0.0]]}}`, "malformed JSON"},
		{"merge is number", `{` + okPre + `, "model": {"type": "BPE", "vocab": {"a": 0}, "merges": [7]}}`, "model.merges[0]"},
		{"merge triple", `{` + okPre + `, "model": {"type": "BPE", "vocab": {"a": 0}, "merges": [["a", "a", "a"]]}}`, "not a pair"},
		{"merge unknown", `{` + okPre + `, "model": {"type": "BPE", "vocab": {"a": 0}, "merges": [["a", "q"]]}}`, `"q" is not in the vocabulary`},
		{"no pre-tokenizer", `{` + okModel + `}`, "no pre_tokenizer"},
		{"metaspace", `{"pre_tokenizer": {"type": "Metaspace"}, ` + okModel + `}`, "Metaspace"},
		{"prefix space", `{"pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": true}, ` + okModel + `}`, "add_prefix_space"},
		{"prefix space default", `{"pre_tokenizer": {"type": "ByteLevel"}, ` + okModel + `}`, "add_prefix_space"},
		{"normalizer", `{"normalizer": {"type": "NFC"}, ` + okPre + `, ` + okModel + `}`, "normalizer"},
		{"decoder", `{"decoder": {"type": "WordPiece"}, ` + okPre + `, ` + okModel + `}`, "decoder"},
		{"dropout", `{` + okPre + `, "model": {"type": "BPE", "dropout": 0.1, "vocab": {"a": 0}, "merges": []}}`, "dropout"},
		{"byte fallback", `{` + okPre + `, "model": {"type": "BPE", "byte_fallback": true, "vocab": {"a": 0}, "merges": []}}`, "byte_fallback"},
		{"bad unk", `{` + okPre + `, "model": {"type": "BPE", "unk_token": "<unk>", "vocab": {"a": 0}, "merges": []}}`, "unk_token"},
		{"added id clash", `{"added_tokens": [{"id": 0, "content": "<x>"}], ` + okPre + `, ` + okModel + `}`, "vocabulary token"},
		{"added id mismatch", `{"added_tokens": [{"id": 5, "content": "ab"}], ` + okPre + `, ` + okModel + `}`, "vocabulary gives it id 2"},
		{"added huge id", `{"added_tokens": [{"id": 99999999999, "content": "<x>"}], ` + okPre + `, ` + okModel + `}`, "outside"},
	} {
		_, err := LoadTokenizerJSON(write(strings.ReplaceAll(tc.name, " ", "_")+".json", tc.body))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want it to mention %q", tc.name, err, tc.want)
		}
	}

	// Added tokens beyond the model vocabulary are decoded and matched by
	// EncodeSpecial; ignore_merges looks whole pieces up first.
	tk, err := LoadTokenizerJSON(write("added.json", `{"added_tokens": [{"id": 3, "content": "<sep>", "special": true}], `+okPre+`,
		"model": {"type": "BPE", "ignore_merges": true, "vocab": {"a": 0, "b": 1, "ab": 2, "abab": 4}, "merges": ["a b"]}}`))
	if err != nil {
		t.Fatal(err)
	}
	if got := tk.EncodeSpecial("ab<sep>abab"); !tokSameIDs(got, []int{2, 3, 4}) || tk.VocabSize() != 5 || tk.Token(3) != "<sep>" {
		t.Errorf("added token / ignore_merges: %v, VocabSize %d", got, tk.VocabSize())
	}
}
