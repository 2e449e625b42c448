// Shared pieces of every method: hook names, softmax and ranking over logit
// rows, and input checks.

package analysis

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"strconv"

	"github.com/factlens/factlens/gpt2"
)

// Hook point names, TransformerLens' for GPT-2.
const (
	hookEmbed    = "hook_embed"
	hookPosEmbed = "hook_pos_embed"
	hookLNScale  = "ln_final.hook_scale"
)

// blockHook names a per-layer hook point: blockHook(3, "mlp.hook_post") is
// "blocks.3.mlp.hook_post".
func blockHook(layer int, point string) string {
	return "blocks." + strconv.Itoa(layer) + "." + point
}

// matchNames matches exactly the given hook point names.
func matchNames(names ...string) gpt2.Matcher {
	set := make(map[string]bool, len(names))
	for _, n := range names {
		set[n] = true
	}
	return func(n string) bool { return set[n] }
}

// perLayer lists point for every layer.
func perLayer(nLayer int, point string) []string {
	names := make([]string, nLayer)
	for l := range names {
		names[l] = blockHook(l, point)
	}
	return names
}

// logSumExp of a row of logits, in float64.
func logSumExp(row []float32) float64 {
	maxV := math.Inf(-1)
	for _, v := range row {
		maxV = max(maxV, float64(v))
	}
	var s float64
	for _, v := range row {
		s += math.Exp(float64(v) - maxV)
	}
	return maxV + math.Log(s)
}

// prob is the softmax probability of token in a row of logits.
func prob(row []float32, token int) float64 {
	return math.Exp(float64(row[token]) - logSumExp(row))
}

// argmax of a row; the first index on ties.
func argmax(row []float32) int {
	best := 0
	for i, v := range row {
		if v > row[best] {
			best = i
		}
	}
	return best
}

// rankOf is the number of entries strictly greater than row[token]: 0 for the
// top token.
func rankOf(row []float32, token int) int {
	r := 0
	for _, v := range row {
		if v > row[token] {
			r++
		}
	}
	return r
}

// topIndices returns the indices of the k largest values of score (all if k
// exceeds the length), largest first, ties by lower index.
func topIndices(n, k int, score func(i int) float64) []int {
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int { return cmp.Compare(score(b), score(a)) })
	if k < n {
		idx = idx[:k]
	}
	return idx
}

// dot64 is the inner product of two float32 vectors, summed in float64.
func dot64(a, b []float32) float64 {
	b = b[:len(a)]
	var s float64
	for i, v := range a {
		s += float64(v) * float64(b[i])
	}
	return s
}

// tokenText returns tok's text for id, or "" without a tokenizer.
func tokenText(tok *gpt2.Tokenizer, id int) string {
	if tok == nil || id < 0 {
		return ""
	}
	return tok.Token(id)
}

// checkToken reports an error for ids outside the vocabulary.
func checkToken(m *gpt2.Model, what string, id int) error {
	if id < 0 || id >= m.VocabSize() {
		return fmt.Errorf("analysis: %s token %d is outside the vocabulary [0, %d)", what, id, m.VocabSize())
	}
	return nil
}

// checkTokens validates a prompt's token ids and length.
func checkTokens(m *gpt2.Model, tokens []int) error {
	if len(tokens) == 0 {
		return fmt.Errorf("analysis: empty prompt")
	}
	if len(tokens) > m.NCtx() {
		return fmt.Errorf("analysis: prompt of %d tokens exceeds the model's %d positions", len(tokens), m.NCtx())
	}
	for i, t := range tokens {
		if t < 0 || t >= m.VocabSize() {
			return fmt.Errorf("analysis: token %d at position %d is outside the vocabulary [0, %d)", t, i, m.VocabSize())
		}
	}
	return nil
}

// weight fetches a processed parameter, or nil when processing folded it away.
func weight(m *gpt2.Model, name string) ([]float32, error) {
	p, err := m.Weight(name)
	if err != nil {
		return nil, fmt.Errorf("analysis: %w", err)
	}
	return p.Data, nil
}

// mean of a float64 slice; NaN when empty.
func mean(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	var s float64
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}
