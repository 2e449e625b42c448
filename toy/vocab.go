package toy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/factlens/factlens/gpt2"
	"github.com/factlens/factlens/weights"
)

// Vocabulary is the toy models' own small byte-level BPE vocabulary, in
// GPT-2's file formats so that gpt2.LoadTokenizer reads it and GPT-2's
// tokenizer code encodes with it: ids 0–255 are the 256 byte tokens (in
// GPT-2's order, so any text can be encoded), then one token per merge, then
// <|endoftext|>. The merges are learned by BPE training on the inventory's
// words, bare and with a leading space, until every such word is a single
// token; so every prompt of every toy world is one token per word.
//
// The vocabulary does not depend on the world: every toy model shares it.
type Vocabulary struct {
	Tokens []string // id → token in byte-level form ("Ġbaseball"), as vocab.json spells it
	Merges [][2]string
	EOT    int
}

// byteLevel is GPT-2's printable stand-in for each byte in vocab.json.
var byteLevel = func() (m [256]string) {
	n := 0
	for b := 0; b < 256; b++ {
		if ('!' <= b && b <= '~') || ('¡' <= b && b <= '¬') || ('®' <= b && b <= 'ÿ') {
			m[b] = string(rune(b))
		} else {
			m[b] = string(rune(256 + n))
			n++
		}
	}
	return m
}()

// byteOrder lists the bytes in GPT-2's id order: its vocab.json gives ids
// 0–255 to the byte tokens sorted by their stand-in characters.
func byteOrder() []int {
	order := make([]int, 256)
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return int([]rune(byteLevel[a])[0] - []rune(byteLevel[b])[0]) })
	return order
}

func toByteLevel(s string) []string {
	out := make([]string, len(s))
	for i := 0; i < len(s); i++ {
		out[i] = byteLevel[s[i]]
	}
	return out
}

// NewVocabulary trains the toy vocabulary. It is deterministic: ties between
// equally frequent pairs go to the lexicographically smallest pair.
func NewVocabulary() *Vocabulary {
	v := &Vocabulary{}
	for _, b := range byteOrder() {
		v.Tokens = append(v.Tokens, byteLevel[b])
	}
	var words [][]string
	for _, w := range inventory() {
		words = append(words, toByteLevel(w), toByteLevel(" "+w))
	}
	for {
		counts := map[[2]string]int{}
		for _, w := range words {
			for i := 0; i+1 < len(w); i++ {
				counts[[2]string{w[i], w[i+1]}]++
			}
		}
		if len(counts) == 0 {
			break
		}
		var best [2]string
		bestN := 0
		for p, n := range counts {
			if n > bestN || (n == bestN && (p[0] < best[0] || (p[0] == best[0] && p[1] < best[1]))) {
				best, bestN = p, n
			}
		}
		merged := best[0] + best[1]
		v.Merges = append(v.Merges, best)
		if !slices.Contains(v.Tokens[256:], merged) {
			v.Tokens = append(v.Tokens, merged)
		}
		for k, w := range words {
			out := w[:0:0]
			for i := 0; i < len(w); i++ {
				if i+1 < len(w) && w[i] == best[0] && w[i+1] == best[1] {
					out = append(out, merged)
					i++
				} else {
					out = append(out, w[i])
				}
			}
			words[k] = out
		}
	}
	v.EOT = len(v.Tokens)
	v.Tokens = append(v.Tokens, gpt2.EndOfText)
	return v
}

// Size is the number of token ids.
func (v *Vocabulary) Size() int { return len(v.Tokens) }

// VocabJSON is vocab.json: token → id, in id order.
func (v *Vocabulary) VocabJSON() []byte {
	var b bytes.Buffer
	b.WriteString("{")
	for id, tok := range v.Tokens {
		if id > 0 {
			b.WriteString(", ")
		}
		key, _ := json.Marshal(tok)
		fmt.Fprintf(&b, "%s: %d", key, id)
	}
	b.WriteString("}\n")
	return b.Bytes()
}

// MergesTxt is merges.txt with GPT-2's version line.
func (v *Vocabulary) MergesTxt() []byte {
	var b bytes.Buffer
	b.WriteString("#version: 0.2\n")
	for _, m := range v.Merges {
		fmt.Fprintf(&b, "%s %s\n", m[0], m[1])
	}
	return b.Bytes()
}

// WriteFiles writes vocab.json and merges.txt into dir.
func (v *Vocabulary) WriteFiles(dir string) error {
	if err := weights.WriteFileBytesAtomic(filepath.Join(dir, "vocab.json"), v.VocabJSON()); err != nil {
		return err
	}
	return weights.WriteFileBytesAtomic(filepath.Join(dir, "merges.txt"), v.MergesTxt())
}

// Tokenizer writes the vocabulary to a temporary folder and loads it with
// GPT-2's tokenizer, exactly as a model folder is read.
func (v *Vocabulary) Tokenizer() (*gpt2.Tokenizer, error) {
	dir, err := os.MkdirTemp("", "factlens-toy-vocab-")
	if err != nil {
		return nil, fmt.Errorf("toy: %w", err)
	}
	defer os.RemoveAll(dir)
	if err := v.WriteFiles(dir); err != nil {
		return nil, err
	}
	return gpt2.LoadTokenizer(dir)
}
