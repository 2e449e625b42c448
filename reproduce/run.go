package reproduce

import (
	"context"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"

	"github.com/factlens/factlens/gpt2"
)

// batchTokens bounds the tokens of one batched forward pass without a
// cache; cachedFloats bounds the floats a cached pass may hold (256 MB).
const (
	batchTokens  = 2048
	cachedFloats = 64 << 20
)

func blockHook(layer int, point string) string {
	return "blocks." + strconv.Itoa(layer) + "." + point
}

func matchNames(names ...string) gpt2.Matcher {
	set := make(map[string]bool, len(names))
	for _, n := range names {
		set[n] = true
	}
	return func(n string) bool { return set[n] }
}

// forGroups runs prompts grouped by length (so without padding), rows at a
// time, and calls fn with the indices of each batch's prompts and its result.
// rows 0 means as many as fit batchTokens.
func forGroups(ctx context.Context, m *gpt2.Model, prompts [][]int, rows int, opts gpt2.RunOptions, fn func(idx []int, res *gpt2.Result) error) error {
	byLen := map[int][]int{}
	var lens []int
	for i, p := range prompts {
		if len(p) == 0 || len(p) > m.NCtx() {
			return fmt.Errorf("reproduce: prompt %d has %d tokens; the model takes 1 to %d", i, len(p), m.NCtx())
		}
		if _, ok := byLen[len(p)]; !ok {
			lens = append(lens, len(p))
		}
		byLen[len(p)] = append(byLen[len(p)], i)
	}
	sort.Ints(lens)
	for _, n := range lens {
		idx := byLen[n]
		r := rows
		if r <= 0 {
			r = max(1, batchTokens/n)
		}
		for s := 0; s < len(idx); s += r {
			if err := ctx.Err(); err != nil {
				return err
			}
			chunk := idx[s:min(s+r, len(idx))]
			batch := make([][]int, len(chunk))
			for j, i := range chunk {
				batch[j] = prompts[i]
			}
			res, err := m.Run(ctx, batch, opts)
			if err != nil {
				return fmt.Errorf("reproduce: %w", err)
			}
			if err := fn(chunk, res); err != nil {
				return err
			}
		}
	}
	return nil
}

// cachedRows is how many rows of n tokens fit cachedFloats when each token
// caches perToken floats.
func cachedRows(n, perToken int) int {
	return max(1, cachedFloats/max(1, n*perToken))
}

// edit overwrites elements [lo, lo+len(vals)) of a hook point's vector at
// one position of one batch row.
type edit struct {
	hook string
	pos  int
	lo   int
	vals []float32
}

// runEdits runs tokens once for every entry of rows, applying that row's
// edits only to it, and returns for each row the last position's logits of
// the tokens in read. Rows are batched; each row computes what running its
// edits alone computes.
func runEdits(ctx context.Context, m *gpt2.Model, tokens []int, rows [][]edit, read []int) ([][]float32, error) {
	out := make([][]float32, len(rows))
	per := max(1, batchTokens/len(tokens))
	for start := 0; start < len(rows); start += per {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		chunk := rows[start:min(start+per, len(rows))]
		batch := make([][]int, len(chunk))
		byHook := map[string][][2]int{} // hook → (row, edit index)
		for r := range chunk {
			batch[r] = tokens
			for e, ed := range chunk[r] {
				byHook[ed.hook] = append(byHook[ed.hook], [2]int{r, e})
			}
		}
		var hooks []gpt2.Hook
		if len(byHook) > 0 {
			names := make([]string, 0, len(byHook))
			for n := range byHook {
				names = append(names, n)
			}
			hooks = append(hooks, gpt2.Hook{Match: matchNames(names...), Fn: func(a *gpt2.Activation) error {
				p := a.Shape[1]
				inner := len(a.Data) / (a.Shape[0] * p)
				for _, re := range byHook[a.Name] {
					ed := chunk[re[0]][re[1]]
					if ed.pos < 0 || ed.pos >= p || ed.lo < 0 || ed.lo+len(ed.vals) > inner {
						return fmt.Errorf("reproduce: edit of %s at position %d, elements [%d, %d), is outside [%d, %d]", a.Name, ed.pos, ed.lo, ed.lo+len(ed.vals), p, inner)
					}
					off := (re[0]*p+ed.pos)*inner + ed.lo
					copy(a.Data[off:off+len(ed.vals)], ed.vals)
				}
				return nil
			}})
		}
		res, err := m.Run(ctx, batch, gpt2.RunOptions{Hooks: hooks, Logits: gpt2.LogitsLast})
		if err != nil {
			return nil, fmt.Errorf("reproduce: %w", err)
		}
		for r := range chunk {
			row := res.Logits.At(r, 0)
			vals := make([]float32, len(read))
			for j, t := range read {
				vals[j] = row[t]
			}
			out[start+r] = vals
		}
	}
	return out, nil
}

// lead is the logit of class label minus the mean logit of the other
// classes: how strongly a row of class logits favours the right one.
func lead(classLogits []float32, label int) float64 {
	if len(classLogits) < 2 {
		return float64(classLogits[label])
	}
	var others float64
	for j, v := range classLogits {
		if j != label {
			others += float64(v)
		}
	}
	return float64(classLogits[label]) - others/float64(len(classLogits)-1)
}

// Small statistics.

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

// stderr is the standard error of the mean (n−1 normalised); NaN below 2.
func stderr(xs []float64) float64 {
	if len(xs) < 2 {
		return math.NaN()
	}
	mu := mean(xs)
	var ss float64
	for _, x := range xs {
		ss += (x - mu) * (x - mu)
	}
	return math.Sqrt(ss / float64(len(xs)-1) / float64(len(xs)))
}

// quantile is the q-quantile of xs by linear interpolation (numpy's default).
func quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Sorted(slices.Values(xs))
	h := q * float64(len(s)-1)
	lo := int(math.Floor(h))
	hi := min(lo+1, len(s)-1)
	return s[lo] + (h-float64(lo))*(s[hi]-s[lo])
}

// finite replaces NaN and infinities by 0 for JSON, which has no NaN.
func finite(v float64) float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0
	}
	return v
}

func pct(v float64) string { return fmt.Sprintf("%.1f%%", 100*v) }
