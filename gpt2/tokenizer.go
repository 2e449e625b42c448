package gpt2

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"unicode/utf8"
)

// EndOfText is GPT-2's only special token; id 50256 in GPT-2's vocabulary.
const EndOfText = "<|endoftext|>"

// tokMaxID bounds token ids read from files, so a corrupt file cannot make the
// loader allocate gigabytes.
const tokMaxID = 1 << 22

// Tokenizer is GPT-2's byte-level BPE tokenizer: its ids equal those of OpenAI's
// encoder.py (GPT-2's original, with Python's `regex` module) on every input;
// see tokenizer_pretok.go for how text is split and how invalid UTF-8 is
// handled. A Tokenizer is immutable once loaded and safe for concurrent use.
//
// Encode never adds special tokens: "<|endoftext|>" in the text is encoded as
// plain text unless EncodeSpecial is used.
type Tokenizer struct {
	tokens []string       // id → the token's bytes
	valid  []bool         // id → assigned (vocabularies may have gaps)
	added  []bool         // id → an added token outside the BPE model
	ids    map[string]int // token bytes → id

	byteID [256]int32          // single-byte token per byte value; -1 if none
	merges map[uint64]bpeMerge // (left id, right id) → rank and merged id

	special      []tokSpecial // recognised by EncodeSpecial, longest first
	eot          int          // id of <|endoftext|>, or -1
	unk          int32        // unk token id for bytes without a token, or -1
	fuseUnk      bool
	ignoreMerges bool
}

// tokSpecial is a token matched verbatim by EncodeSpecial.
type tokSpecial struct {
	text string
	id   int
}

// tokMergeLine is one merge rule as read from a file.
type tokMergeLine struct {
	left, right string // byte-level text
	where       string // for error messages, e.g. "merges.txt line 7"
}

// tokAdded is an added token from tokenizer.json.
type tokAdded struct {
	id      int
	content string
}

// tokByteRune maps a byte to the printable rune GPT-2 uses for it in
// vocab.json and merges.txt; tokRuneByte is the inverse (-1: not a byte rune).
var tokByteRune, tokRuneByte = func() (br [256]rune, rb [324]int16) {
	for i := range rb {
		rb[i] = -1
	}
	n := 0
	for b := 0; b < 256; b++ {
		printable := ('!' <= b && b <= '~') || ('¡' <= b && b <= '¬') || ('®' <= b && b <= 'ÿ')
		if printable {
			br[b] = rune(b)
		} else {
			br[b] = rune(256 + n)
			n++
		}
		rb[br[b]] = int16(b)
	}
	return br, rb
}()

// tokDecodeByteLevel turns vocab.json text (one rune per byte) into bytes.
func tokDecodeByteLevel(s string) (string, error) {
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		if r < 0 || int(r) >= len(tokRuneByte) || tokRuneByte[r] < 0 {
			return "", fmt.Errorf("%q is not one of GPT-2's 256 byte-level characters", r)
		}
		b.WriteByte(byte(tokRuneByte[r]))
	}
	return b.String(), nil
}

// tokEncodeByteLevel is the inverse of tokDecodeByteLevel.
func tokEncodeByteLevel(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		b.WriteRune(tokByteRune[s[i]])
	}
	return b.String()
}

// LoadTokenizer loads a tokenizer from a folder holding vocab.json and
// merges.txt (preferred when present) or a Hugging Face tokenizer.json.
func LoadTokenizer(dir string) (*Tokenizer, error) {
	vocab, merges := filepath.Join(dir, "vocab.json"), filepath.Join(dir, "merges.txt")
	if tokExists(vocab) && tokExists(merges) {
		return LoadTokenizerFiles(vocab, merges)
	}
	if tj := filepath.Join(dir, "tokenizer.json"); tokExists(tj) {
		return LoadTokenizerJSON(tj)
	}
	return nil, fmt.Errorf("gpt2: tokenizer folder %s: found neither vocab.json+merges.txt nor tokenizer.json", dir)
}

func tokExists(path string) bool {
	st, err := os.Stat(path)
	return err == nil && !st.IsDir()
}

// LoadTokenizerFiles loads GPT-2's vocab.json (token text → id) and merges.txt
// (one "left right" merge per line, optionally after a "#version" line).
// "<|endoftext|>", if in the vocabulary, is the special token of EncodeSpecial.
func LoadTokenizerFiles(vocabPath, mergesPath string) (*Tokenizer, error) {
	vocabData, err := os.ReadFile(vocabPath)
	if err != nil {
		return nil, fmt.Errorf("gpt2: vocab: %w", err)
	}
	mergesData, err := os.ReadFile(mergesPath)
	if err != nil {
		return nil, fmt.Errorf("gpt2: merges: %w", err)
	}
	t, err := tokParseFiles(vocabData, mergesData, filepath.Base(mergesPath))
	if err != nil {
		return nil, fmt.Errorf("gpt2: tokenizer %s + %s: %w", vocabPath, mergesPath, err)
	}
	return t, nil
}

// tokParseFiles builds a tokenizer from the contents of vocab.json and merges.txt.
func tokParseFiles(vocabData, mergesData []byte, mergesName string) (*Tokenizer, error) {
	var vocab map[string]int
	if err := json.Unmarshal(vocabData, &vocab); err != nil {
		return nil, fmt.Errorf("vocab.json is not a JSON object of token → id: %w", err)
	}
	merges, err := tokParseMergesTxt(mergesData, mergesName)
	if err != nil {
		return nil, err
	}
	return tokBuild(vocab, merges, nil, "", false, false)
}

// tokParseMergesTxt reads merges.txt. Blank lines and a first line starting
// with "#version" are skipped; every other line must be two tokens separated
// by one space. The rank of a merge is its index among the merge lines.
func tokParseMergesTxt(data []byte, name string) ([]tokMergeLine, error) {
	if !utf8.Valid(data) {
		return nil, fmt.Errorf("%s is not valid UTF-8", name)
	}
	var out []tokMergeLine
	for n, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSuffix(line, "\r")
		if line == "" || (n == 0 && strings.HasPrefix(line, "#version")) {
			continue
		}
		where := fmt.Sprintf("%s line %d", name, n+1)
		left, right, ok := strings.Cut(line, " ")
		if !ok || left == "" || right == "" || strings.Contains(right, " ") {
			return nil, fmt.Errorf("%s: %q is not two tokens separated by one space", where, line)
		}
		out = append(out, tokMergeLine{left: left, right: right, where: where})
	}
	return out, nil
}

// LoadTokenizerJSON loads a Hugging Face tokenizer.json whose model is a
// byte-level BPE like GPT-2's: model type BPE (merges as "a b" strings or as
// [a, b] pairs), a ByteLevel pre-tokenizer without prefix space, no
// normalizer. Added tokens are recognised by EncodeSpecial.
func LoadTokenizerJSON(path string) (*Tokenizer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("gpt2: tokenizer.json: %w", err)
	}
	t, err := tokParseHFJSON(data)
	if err != nil {
		return nil, fmt.Errorf("gpt2: tokenizer.json %s: %w", path, err)
	}
	return t, nil
}

type tokHFFile struct {
	AddedTokens []struct {
		ID      *int   `json:"id"`
		Content string `json:"content"`
	} `json:"added_tokens"`
	Normalizer   json.RawMessage `json:"normalizer"`
	PreTokenizer json.RawMessage `json:"pre_tokenizer"`
	Decoder      json.RawMessage `json:"decoder"`
	Model        *struct {
		Type                    string            `json:"type"`
		Dropout                 *float64          `json:"dropout"`
		UnkToken                *string           `json:"unk_token"`
		ContinuingSubwordPrefix *string           `json:"continuing_subword_prefix"`
		EndOfWordSuffix         *string           `json:"end_of_word_suffix"`
		FuseUnk                 bool              `json:"fuse_unk"`
		ByteFallback            bool              `json:"byte_fallback"`
		IgnoreMerges            bool              `json:"ignore_merges"`
		Vocab                   map[string]int    `json:"vocab"`
		Merges                  []json.RawMessage `json:"merges"`
	} `json:"model"`
}

// tokHFByteLevel is the part of a ByteLevel pre-tokenizer or decoder we check.
type tokHFByteLevel struct {
	Type           string `json:"type"`
	AddPrefixSpace *bool  `json:"add_prefix_space"`
	UseRegex       *bool  `json:"use_regex"`
}

func tokIsNull(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) == 0 || string(raw) == "null"
}

func tokParseHFJSON(data []byte) (*Tokenizer, error) {
	var f tokHFFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("malformed JSON: %w", err)
	}
	m := f.Model
	if m == nil {
		return nil, errors.New(`no "model" section`)
	}
	if m.Type != "BPE" && m.Type != "" {
		return nil, fmt.Errorf("model type %q is not supported (want BPE)", m.Type)
	}
	if m.Vocab == nil {
		return nil, errors.New(`model has no "vocab"`)
	}
	switch {
	case m.Dropout != nil && *m.Dropout != 0:
		return nil, fmt.Errorf("BPE dropout %g is not supported", *m.Dropout)
	case m.ContinuingSubwordPrefix != nil && *m.ContinuingSubwordPrefix != "":
		return nil, fmt.Errorf("continuing_subword_prefix %q is not supported", *m.ContinuingSubwordPrefix)
	case m.EndOfWordSuffix != nil && *m.EndOfWordSuffix != "":
		return nil, fmt.Errorf("end_of_word_suffix %q is not supported", *m.EndOfWordSuffix)
	case m.ByteFallback:
		return nil, errors.New("byte_fallback is not supported (byte-level BPE has a token per byte)")
	}
	if !tokIsNull(f.Normalizer) {
		return nil, fmt.Errorf("normalizer %s is not supported (GPT-2 has none)", tokShort(f.Normalizer))
	}
	if tokIsNull(f.PreTokenizer) {
		return nil, errors.New("no pre_tokenizer: GPT-2 needs a ByteLevel pre-tokenizer")
	}
	var pre tokHFByteLevel
	if err := json.Unmarshal(f.PreTokenizer, &pre); err != nil || pre.Type != "ByteLevel" {
		return nil, fmt.Errorf("pre_tokenizer %s is not supported (want GPT-2's ByteLevel)", tokShort(f.PreTokenizer))
	}
	// Hugging Face's ByteLevel defaults are add_prefix_space=true, use_regex=true.
	if pre.AddPrefixSpace == nil || *pre.AddPrefixSpace {
		return nil, errors.New("ByteLevel pre_tokenizer with add_prefix_space=true is not supported (GPT-2 uses false)")
	}
	if pre.UseRegex != nil && !*pre.UseRegex {
		return nil, errors.New("ByteLevel pre_tokenizer with use_regex=false is not supported")
	}
	if !tokIsNull(f.Decoder) {
		var dec tokHFByteLevel
		if err := json.Unmarshal(f.Decoder, &dec); err != nil || dec.Type != "ByteLevel" {
			return nil, fmt.Errorf("decoder %s is not supported (want ByteLevel)", tokShort(f.Decoder))
		}
	}

	merges := make([]tokMergeLine, 0, len(m.Merges))
	for i, raw := range m.Merges {
		where := fmt.Sprintf("model.merges[%d]", i)
		var line string
		var pair []string
		switch {
		case json.Unmarshal(raw, &line) == nil:
			left, right, ok := strings.Cut(line, " ")
			if !ok || left == "" || right == "" || strings.Contains(right, " ") {
				return nil, fmt.Errorf("%s: %q is not two tokens separated by one space", where, line)
			}
			merges = append(merges, tokMergeLine{left: left, right: right, where: where})
		case json.Unmarshal(raw, &pair) == nil:
			if len(pair) != 2 || pair[0] == "" || pair[1] == "" {
				return nil, fmt.Errorf("%s: %s is not a pair of tokens", where, tokShort(raw))
			}
			merges = append(merges, tokMergeLine{left: pair[0], right: pair[1], where: where})
		default:
			return nil, fmt.Errorf("%s: %s is neither \"a b\" nor [\"a\", \"b\"]", where, tokShort(raw))
		}
	}
	var added []tokAdded
	for i, a := range f.AddedTokens {
		if a.ID == nil || a.Content == "" {
			return nil, fmt.Errorf("added_tokens[%d]: needs an id and a non-empty content", i)
		}
		added = append(added, tokAdded{id: *a.ID, content: a.Content})
	}
	unk := ""
	if m.UnkToken != nil {
		unk = *m.UnkToken
	}
	return tokBuild(m.Vocab, merges, added, unk, m.FuseUnk, m.IgnoreMerges)
}

// tokShort abbreviates a JSON value for an error message.
func tokShort(raw json.RawMessage) string {
	s := string(bytes.TrimSpace(raw))
	if len(s) > 80 {
		s = s[:77] + "..."
	}
	return s
}

// tokBuild assembles a Tokenizer and checks that the pieces fit together.
func tokBuild(vocab map[string]int, merges []tokMergeLine, added []tokAdded, unk string, fuseUnk, ignoreMerges bool) (*Tokenizer, error) {
	if len(vocab) == 0 {
		return nil, errors.New("empty vocabulary")
	}
	size := 0
	for tok, id := range vocab {
		if id < 0 || id >= tokMaxID {
			return nil, fmt.Errorf("vocabulary token %q has id %d, outside [0, %d)", tok, id, tokMaxID)
		}
		size = max(size, id+1)
	}
	for _, a := range added {
		if a.id < 0 || a.id >= tokMaxID {
			return nil, fmt.Errorf("added token %q has id %d, outside [0, %d)", a.content, a.id, tokMaxID)
		}
		size = max(size, a.id+1)
	}
	t := &Tokenizer{
		tokens: make([]string, size),
		valid:  make([]bool, size),
		added:  make([]bool, size),
		ids:    make(map[string]int, len(vocab)+len(added)),
		merges: make(map[uint64]bpeMerge, len(merges)),
		eot:    -1,
		unk:    -1,

		fuseUnk:      fuseUnk,
		ignoreMerges: ignoreMerges,
	}
	for i := range t.byteID {
		t.byteID[i] = -1
	}
	// Visit tokens in id order so errors are reproducible.
	type entry struct {
		tok string
		id  int
	}
	entries := make([]entry, 0, len(vocab))
	for tok, id := range vocab {
		entries = append(entries, entry{tok, id})
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].id < entries[j].id })
	for _, e := range entries {
		tok, id := e.tok, e.id
		raw, err := tokDecodeByteLevel(tok)
		if err != nil {
			return nil, fmt.Errorf("vocabulary token %q (id %d): %w", tok, id, err)
		}
		if t.valid[id] {
			return nil, fmt.Errorf("vocabulary tokens %q and %q both have id %d", tokEncodeByteLevel(t.tokens[id]), tok, id)
		}
		t.tokens[id], t.valid[id] = raw, true
		t.ids[raw] = id
		if len(raw) == 1 {
			t.byteID[raw[0]] = int32(id)
		}
	}
	for _, a := range added {
		if id, ok := t.ids[a.content]; ok && id != a.id {
			return nil, fmt.Errorf("added token %q has id %d, but the vocabulary gives it id %d", a.content, a.id, id)
		}
		if t.valid[a.id] && t.tokens[a.id] != a.content {
			return nil, fmt.Errorf("added token %q has id %d, which is vocabulary token %q", a.content, a.id, tokEncodeByteLevel(t.tokens[a.id]))
		}
		if !t.valid[a.id] {
			t.tokens[a.id], t.valid[a.id], t.added[a.id] = a.content, true, true
			t.ids[a.content] = a.id
		}
		t.special = append(t.special, tokSpecial{text: a.content, id: a.id})
	}
	if id, ok := t.ids[EndOfText]; ok {
		t.eot = id
		listed := false
		for _, sp := range t.special {
			listed = listed || sp.text == EndOfText
		}
		if !listed {
			t.special = append(t.special, tokSpecial{text: EndOfText, id: id})
		}
	}
	sort.SliceStable(t.special, func(i, j int) bool { return len(t.special[i].text) > len(t.special[j].text) })
	if unk != "" {
		id, ok := vocab[unk]
		if !ok {
			return nil, fmt.Errorf("unk_token %q is not in the vocabulary", unk)
		}
		t.unk = int32(id)
	}

	for rank, m := range merges {
		left, err := tokDecodeByteLevel(m.left)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", m.where, err)
		}
		right, err := tokDecodeByteLevel(m.right)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", m.where, err)
		}
		l, okL := t.ids[left]
		r, okR := t.ids[right]
		id, okM := t.ids[left+right]
		switch {
		case !okL || t.added[l]:
			return nil, fmt.Errorf("%s: merge %q %q: %q is not in the vocabulary", m.where, m.left, m.right, m.left)
		case !okR || t.added[r]:
			return nil, fmt.Errorf("%s: merge %q %q: %q is not in the vocabulary", m.where, m.left, m.right, m.right)
		case !okM || t.added[id]:
			return nil, fmt.Errorf("%s: merge %q %q: the merged token %q is not in the vocabulary", m.where, m.left, m.right, m.left+m.right)
		}
		// A repeated merge keeps its last rank, as encoder.py's dict and
		// Hugging Face tokenizers do.
		t.merges[bpePairKey(int32(l), int32(r))] = bpeMerge{rank: int32(rank), id: int32(id)}
	}
	return t, nil
}

// VocabSize is one more than the largest token id (50257 for GPT-2).
func (t *Tokenizer) VocabSize() int { return len(t.tokens) }

// EOT is the id of "<|endoftext|>" (50256 for GPT-2), or -1 if the vocabulary
// has no such token.
func (t *Tokenizer) EOT() int { return t.eot }

// Token returns the bytes of token id as a string: " basketball" for 9669.
// Tokens may hold part of a UTF-8 sequence. Token returns "" for ids that are
// out of range.
func (t *Tokenizer) Token(id int) string {
	if id < 0 || id >= len(t.tokens) {
		return ""
	}
	return t.tokens[id]
}

// ID returns the id of the token whose bytes are tok (" basketball" → 9669).
func (t *Tokenizer) ID(tok string) (int, bool) {
	id, ok := t.ids[tok]
	return id, ok
}

// Decode concatenates the bytes of the tokens. For any text,
// Decode(Encode(text)) == text, invalid UTF-8 included.
func (t *Tokenizer) Decode(ids []int) (string, error) {
	n := 0
	for i, id := range ids {
		if id < 0 || id >= len(t.tokens) || !t.valid[id] {
			return "", fmt.Errorf("gpt2: decode: token %d (at position %d) is not in the vocabulary of %d tokens", id, i, len(t.tokens))
		}
		n += len(t.tokens[id])
	}
	var b strings.Builder
	b.Grow(n)
	for _, id := range ids {
		b.WriteString(t.tokens[id])
	}
	return b.String(), nil
}

// Encode returns GPT-2's token ids for text. Special-token text such as
// "<|endoftext|>" is encoded as ordinary text.
func (t *Tokenizer) Encode(text string) []int {
	ids, _ := t.encode(text, false, false)
	return ids
}

// EncodeSpecial is Encode, except that "<|endoftext|>" (and any added tokens of
// a tokenizer.json) become their own ids; the text between them is encoded
// separately, as tiktoken does with allowed_special="all".
func (t *Tokenizer) EncodeSpecial(text string) []int {
	ids, _ := t.encode(text, true, false)
	return ids
}

// EncodeOffsets is Encode that also returns, for each token, the byte range
// [start, end) of text it covers. The ranges are contiguous and cover the whole
// text (bytes dropped by a vocabulary without a token for them excepted). A
// token boundary can fall inside a multi-byte UTF-8 character (e.g. emoji and
// rare CJK are split into byte tokens); then text[start:end] is not valid
// UTF-8 on its own, and the character's bytes span two or more tokens.
func (t *Tokenizer) EncodeOffsets(text string) (ids []int, spans [][2]int) {
	return t.encode(text, false, true)
}

// tokCacheMin is the text length from which encode memoises the ids of
// repeated pieces; shorter texts rarely repeat a piece.
const tokCacheMin = 512

// tokCached locates a memoised piece encoding in tokEncoder's buffers.
type tokCached struct{ off, n int }

// tokEncoder is the state of one encode call.
type tokEncoder struct {
	t             *Tokenizer
	sc            bpeScratch
	ids           []int32 // one piece's result
	starts, sizes []int

	cache                   map[string]tokCached
	cacheIDs                []int32
	cacheStarts, cacheSizes []int
}

func (t *Tokenizer) encode(text string, special, withSpans bool) ([]int, [][2]int) {
	e := tokEncoder{t: t}
	if len(text) >= tokCacheMin {
		e.cache = make(map[string]tokCached)
	}
	out := make([]int, 0, len(text)/4+1)
	var spans [][2]int
	if withSpans {
		spans = make([][2]int, 0, cap(out))
	}
	if !special || len(t.special) == 0 {
		out, spans = e.segment(text, 0, out, spans, withSpans)
		return out, spans
	}
	// next[k] caches where special k next occurs at or after pos (-1: never).
	next := make([]int, len(t.special))
	for k := range next {
		next[k] = -2
	}
	pos := 0
	for pos < len(text) {
		best, bestK := -1, -1
		for k, sp := range t.special {
			if next[k] == -2 || (next[k] >= 0 && next[k] < pos) {
				next[k] = -1
				if i := strings.Index(text[pos:], sp.text); i >= 0 {
					next[k] = pos + i
				}
			}
			// Specials are sorted longest first, so ties go to the longest.
			if next[k] >= 0 && (best < 0 || next[k] < best) {
				best, bestK = next[k], k
			}
		}
		if best < 0 {
			break
		}
		out, spans = e.segment(text[pos:best], pos, out, spans, withSpans)
		sp := t.special[bestK]
		out = append(out, sp.id)
		if withSpans {
			spans = append(spans, [2]int{best, best + len(sp.text)})
		}
		pos = best + len(sp.text)
	}
	out, spans = e.segment(text[pos:], pos, out, spans, withSpans)
	return out, spans
}

// segment encodes text (at byte offset base of the whole input) piece by piece.
func (e *tokEncoder) segment(text string, base int, out []int, spans [][2]int, withSpans bool) ([]int, [][2]int) {
	for i := 0; i < len(text); {
		j := pretokNext(text, i)
		piece := text[i:j]
		ids, starts, sizes := e.piece(piece)
		for k, id := range ids {
			out = append(out, int(id))
			if withSpans {
				s := base + i + starts[k]
				spans = append(spans, [2]int{s, s + sizes[k]})
			}
		}
		i = j
	}
	return out, spans
}

// piece returns the ids of one piece with each token's start and size within it.
func (e *tokEncoder) piece(piece string) (ids []int32, starts, sizes []int) {
	if e.cache != nil {
		if c, ok := e.cache[piece]; ok {
			end := c.off + c.n
			return e.cacheIDs[c.off:end], e.cacheStarts[c.off:end], e.cacheSizes[c.off:end]
		}
	}
	e.ids, e.starts, e.sizes = e.t.bpeEncodePiece(piece, &e.sc, e.ids[:0], e.starts[:0], e.sizes[:0])
	if e.cache != nil {
		off := len(e.cacheIDs)
		e.cacheIDs = append(e.cacheIDs, e.ids...)
		e.cacheStarts = append(e.cacheStarts, e.starts...)
		e.cacheSizes = append(e.cacheSizes, e.sizes...)
		e.cache[piece] = tokCached{off: off, n: len(e.ids)}
	}
	return e.ids, e.starts, e.sizes
}
