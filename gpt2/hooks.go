package gpt2

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/nlpodyssey/spago/mat"
)

// Activation is one tensor at a hook point: the batch dimension included,
// row-major, with the names and shapes TransformerLens uses for GPT-2.
//
// The Activation a Hook receives is a view of the forward's own buffer: a
// hook may change Data in place (that is how patching, ablation and steering
// work) but must not keep it after returning. Activations in Result are
// copies owned by the caller.
type Activation struct {
	Name  string
	Shape []int
	Data  []float32
}

// Matrix views the activation as a 2-D spago matrix [product of all but the
// last dimension, last dimension], sharing Data (no copy). A Shape that does
// not fit Data gives a single row.
func (a *Activation) Matrix() *mat.Dense[float32] {
	rows, cols := 1, len(a.Data)
	if n := len(a.Shape); n > 0 && a.Shape[n-1] > 0 && len(a.Data)%a.Shape[n-1] == 0 {
		rows, cols = len(a.Data)/a.Shape[n-1], a.Shape[n-1]
	}
	return mat.NewDense[float32](mat.WithShape(rows, cols), mat.WithBacking(a.Data))
}

// Clone returns a deep copy.
func (a *Activation) Clone() *Activation {
	return &Activation{Name: a.Name, Shape: slices.Clone(a.Shape), Data: slices.Clone(a.Data)}
}

// At returns the contiguous block of Data at the leading indices idx: with
// all but the last index given it is one vector (e.g. At(b, pos) of a
// residual-stream activation is that token's d_model vector); with none it is
// all of Data. It returns nil if an index is out of range.
func (a *Activation) At(idx ...int) []float32 {
	if len(idx) > len(a.Shape) {
		return nil
	}
	off, size := 0, len(a.Data)
	for i, x := range idx {
		if x < 0 || x >= a.Shape[i] {
			return nil
		}
		size /= a.Shape[i]
		off += x * size
	}
	return a.Data[off : off+size]
}

// Matcher selects hook points by name. Any func(string) bool will do.
type Matcher func(name string) bool

// HookName matches exactly one hook point.
func HookName(name string) Matcher {
	return func(n string) bool { return n == name }
}

// HookGlob matches names against a path.Match pattern, e.g.
// "blocks.*.mlp.hook_post" ('*' also crosses dots, as no name contains '/').
// A malformed pattern matches nothing; Run then reports that the hook matches
// no hook point. Use CompileHookGlob to get the pattern error itself.
func HookGlob(pattern string) Matcher {
	m, err := CompileHookGlob(pattern)
	if err != nil {
		return func(string) bool { return false }
	}
	return m
}

// CompileHookGlob is HookGlob that reports a malformed pattern.
func CompileHookGlob(pattern string) (Matcher, error) {
	if _, err := path.Match(pattern, ""); err != nil {
		return nil, fmt.Errorf("gpt2: hook pattern %q: %w", pattern, err)
	}
	return func(n string) bool {
		ok, _ := path.Match(pattern, n)
		return ok
	}, nil
}

// Hook runs Fn on every hook point Match selects, in forward order, before
// the activation is cached or used downstream. Fn may modify a.Data in place;
// the change then flows into everything computed from it. An error from Fn
// aborts the run and is returned by Run.
type Hook struct {
	Match Matcher
	Fn    func(a *Activation) error
}

// Per-layer hook points, in the order a block fires them.
const (
	ptResidPre = iota
	ptLn1Scale
	ptLn1Normalized
	ptQ
	ptK
	ptV
	ptAttnScores
	ptPattern
	ptZ
	ptResult
	ptAttnOut
	ptResidMid
	ptLn2Scale
	ptLn2Normalized
	ptMLPPre
	ptMLPPost
	ptMLPOut
	ptResidPost
	pointsPerBlock
)

// blockPointNames are the names of the per-layer points after "blocks.L.".
var blockPointNames = [pointsPerBlock]string{
	ptResidPre:      "hook_resid_pre",
	ptLn1Scale:      "ln1.hook_scale",
	ptLn1Normalized: "ln1.hook_normalized",
	ptQ:             "attn.hook_q",
	ptK:             "attn.hook_k",
	ptV:             "attn.hook_v",
	ptAttnScores:    "attn.hook_attn_scores",
	ptPattern:       "attn.hook_pattern",
	ptZ:             "attn.hook_z",
	ptResult:        "attn.hook_result",
	ptAttnOut:       "hook_attn_out",
	ptResidMid:      "hook_resid_mid",
	ptLn2Scale:      "ln2.hook_scale",
	ptLn2Normalized: "ln2.hook_normalized",
	ptMLPPre:        "mlp.hook_pre",
	ptMLPPost:       "mlp.hook_post",
	ptMLPOut:        "hook_mlp_out",
	ptResidPost:     "hook_resid_post",
}

// Global hook points: two before the blocks and two after them.
const (
	ptEmbed    = 0
	ptPosEmbed = 1
	firstBlock = 2
)

// blockPoint is the index of the first hook point of layer l.
func blockPoint(l int) int { return firstBlock + l*pointsPerBlock }

// finalPoints returns the indices of ln_final.hook_scale and hook_normalized.
func finalPoints(nLayer int) (scale, normalized int) {
	return blockPoint(nLayer), blockPoint(nLayer) + 1
}

// hookPointNames lists every hook point of an nLayer model in forward order.
func hookPointNames(nLayer int) []string {
	names := []string{"hook_embed", "hook_pos_embed"}
	for l := 0; l < nLayer; l++ {
		prefix := "blocks." + strconv.Itoa(l) + "."
		for _, n := range blockPointNames {
			names = append(names, prefix+n)
		}
	}
	return append(names, "ln_final.hook_scale", "ln_final.hook_normalized")
}

// HookNames lists every hook point in the order the forward pass fires them.
func (m *Model) HookNames() []string { return slices.Clone(m.points) }

// CheckHookName returns nil if name is a hook point of this model, and
// otherwise an error naming the closest valid names.
func (m *Model) CheckHookName(name string) error {
	if _, ok := m.pointIndex[name]; ok {
		return nil
	}
	best, bestDist := []string(nil), -1
	for _, n := range m.points {
		d := editDistance(name, n)
		switch {
		case bestDist < 0 || d < bestDist:
			best, bestDist = []string{n}, d
		case d == bestDist:
			best = append(best, n)
		}
	}
	if len(best) > 3 {
		best = best[:3]
	}
	return fmt.Errorf("gpt2: %q is not a hook point of this %d-layer model; did you mean %s?",
		name, m.Config.NLayer, quoteList(best))
}

func quoteList(s []string) string {
	q := make([]string, len(s))
	for i, x := range s {
		q[i] = strconv.Quote(x)
	}
	return strings.Join(q, " or ")
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// positionAxis is the axis of a that indexes token positions: 2 (the query
// axis) for attention scores and patterns, 1 for every other hook point.
func positionAxis(a *Activation) int {
	if strings.HasSuffix(a.Name, "hook_attn_scores") || strings.HasSuffix(a.Name, "hook_pattern") {
		return 2
	}
	return 1
}

// forPositions calls fn(row, off, block) for every batch row and every
// selected position of a, where block = Data[off:off+len(block)] is the
// contiguous part of Data at that (row, …, pos) — for [b,h,q,k] tensors once
// per head. Negative positions count from the end; none means every position.
func forPositions(a *Activation, positions []int, fn func(row, off int, block []float32)) error {
	axis := positionAxis(a)
	if len(a.Shape) <= axis {
		return fmt.Errorf("gpt2: %s: shape %v has no position axis", a.Name, a.Shape)
	}
	n := a.Shape[axis]
	var sel []int
	if len(positions) == 0 {
		for p := 0; p < n; p++ {
			sel = append(sel, p)
		}
	} else {
		for _, p := range positions {
			q := p
			if q < 0 {
				q += n
			}
			if q < 0 || q >= n {
				return fmt.Errorf("gpt2: %s: position %d out of range for %d positions", a.Name, p, n)
			}
			sel = append(sel, q)
		}
	}
	inner := 1
	for _, s := range a.Shape[axis+1:] {
		inner *= s
	}
	outer := 1 // dimensions between batch and position (heads for patterns)
	for _, s := range a.Shape[1:axis] {
		outer *= s
	}
	for b := 0; b < a.Shape[0]; b++ {
		for o := 0; o < outer; o++ {
			base := (b*outer + o) * n * inner
			for _, p := range sel {
				off := base + p*inner
				fn(b, off, a.Data[off:off+inner])
			}
		}
	}
	return nil
}

// ZeroAblate sets every matched activation to zero.
func ZeroAblate(match Matcher) Hook {
	return Hook{Match: match, Fn: func(a *Activation) error {
		clear(a.Data)
		return nil
	}}
}

// MeanAblate replaces every matched activation by mean, broadcast over its
// leading dimensions: mean's shape must equal the trailing dimensions of the
// activation (e.g. [d_mlp] for a per-neuron mean, or [pos, d_mlp], or the
// full shape). To mean-ablate several hook points with different means, use
// one MeanAblate per name.
func MeanAblate(match Matcher, mean *Activation) Hook {
	return Hook{Match: match, Fn: func(a *Activation) error {
		if mean == nil || !trailingShape(a.Shape, mean.Shape) || len(mean.Data) == 0 {
			var shape []int
			if mean != nil {
				shape = mean.Shape
			}
			return fmt.Errorf("gpt2: mean ablation of %s %v: mean has shape %v, want trailing dimensions of it", a.Name, a.Shape, shape)
		}
		for off := 0; off < len(a.Data); off += len(mean.Data) {
			copy(a.Data[off:], mean.Data)
		}
		return nil
	}}
}

// trailingShape reports whether tail equals the last len(tail) dimensions of shape.
func trailingShape(shape, tail []int) bool {
	return len(tail) <= len(shape) && slices.Equal(shape[len(shape)-len(tail):], tail)
}

// PatchFrom overwrites every matched activation, at the given positions (all
// if none; negative counts from the end; the query axis for attention scores
// and patterns), with the activation of the same name in cache — e.g. a clean
// run's cache patched into a corrupted run. The cached tensor must have the
// same shape, or batch 1 to patch the same values into every row. A name
// missing from cache is an error.
func PatchFrom(cache map[string]*Activation, match Matcher, positions ...int) Hook {
	return Hook{Match: match, Fn: func(a *Activation) error {
		src, ok := cache[a.Name]
		if !ok {
			return fmt.Errorf("gpt2: patch %s: not in the source cache", a.Name)
		}
		if len(src.Shape) != len(a.Shape) || !slices.Equal(src.Shape[1:], a.Shape[1:]) ||
			(src.Shape[0] != a.Shape[0] && src.Shape[0] != 1) {
			return fmt.Errorf("gpt2: patch %s: source shape %v does not fit %v", a.Name, src.Shape, a.Shape)
		}
		rowSize := len(a.Data) / a.Shape[0]
		return forPositions(a, positions, func(row, off int, block []float32) {
			if src.Shape[0] == 1 {
				off -= row * rowSize
			}
			copy(block, src.Data[off:])
		})
	}}
}

// AddDirection adds scale·dir to the vector of every matched activation at
// the given positions (all if none; negative counts from the end) — activation
// steering. dir must have the size of one position's block (d_model for the
// residual stream, d_mlp for MLP neurons, n_head·d_head for hook_z).
func AddDirection(match Matcher, dir []float32, scale float32, positions ...int) Hook {
	return Hook{Match: match, Fn: func(a *Activation) error {
		if positionAxis(a) != 1 {
			return fmt.Errorf("gpt2: add direction to %s: attention scores and patterns have no per-position vector", a.Name)
		}
		return forPositionsChecked(a, positions, len(dir), func(block []float32) {
			for i, v := range dir {
				block[i] += scale * v
			}
		})
	}}
}

func forPositionsChecked(a *Activation, positions []int, size int, fn func(block []float32)) error {
	var sizeErr error
	err := forPositions(a, positions, func(_, _ int, block []float32) {
		if len(block) != size {
			sizeErr = fmt.Errorf("gpt2: %s: direction has %d elements, a position holds %d", a.Name, size, len(block))
			return
		}
		fn(block)
	})
	return errors.Join(err, sizeErr)
}

// ResampleAblate replaces each batch row of every matched activation with a
// row drawn uniformly (with replacement, from rng) from the activation of the
// same name in source — typically the cache of a run on other prompts of the
// same length. The draws differ from run to run; seed rng for reproducibility.
func ResampleAblate(match Matcher, source map[string]*Activation, rng *rand.Rand) Hook {
	return Hook{Match: match, Fn: func(a *Activation) error {
		src, ok := source[a.Name]
		if !ok {
			return fmt.Errorf("gpt2: resample %s: not in the source cache", a.Name)
		}
		if len(src.Shape) != len(a.Shape) || !slices.Equal(src.Shape[1:], a.Shape[1:]) || src.Shape[0] < 1 {
			return fmt.Errorf("gpt2: resample %s: source shape %v does not fit %v", a.Name, src.Shape, a.Shape)
		}
		if rng == nil {
			return fmt.Errorf("gpt2: resample %s: nil random source", a.Name)
		}
		rowSize := len(a.Data) / a.Shape[0]
		for b := 0; b < a.Shape[0]; b++ {
			r := rng.IntN(src.Shape[0])
			copy(a.Data[b*rowSize:(b+1)*rowSize], src.Data[r*rowSize:])
		}
		return nil
	}}
}
