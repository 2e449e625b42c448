package analysis

import (
	"context"
	"fmt"

	"github.com/factlens/factlens/gpt2"
)

// edit overwrites part of one token's vector at a hook point: the values
// vals go to elements [lo, lo+len(vals)) of the vector at position pos (a
// head's slice of hook_z, one neuron of hook_post, or the whole vector).
type edit struct {
	name string
	pos  int
	lo   int
	vals []float32
}

// rowSpec is what one batch row of a batched intervention does: its edits
// and, for causal tracing, which noise sample corrupts its embeddings
// (noisy: sample index+1 into the runner's noise table; 0 for none).
type rowSpec struct {
	edits []edit
	noisy int
}

// embedNoise adds noise[s] (a [len(positions)·d_model] block) to hook_embed
// at positions of every row whose spec names sample s.
type embedNoise struct {
	positions []int
	samples   [][]float32
}

// batchRunner runs many single-prompt interventions as the rows of a few
// batched forward passes: every row runs the same tokens, and a row's edits
// touch only that row. This computes what running each intervention alone
// does (up to float rounding), with fewer, larger matrix products.
type batchRunner struct {
	m         *gpt2.Model
	tokens    []int
	noise     *embedNoise
	logits    gpt2.LogitsMode
	maxTokens int // rows·positions per forward pass
}

// defaultMaxTokens bounds one batched pass (~100 MB of GPT-2 small
// activations): large enough to keep the matrix products efficient.
const defaultMaxTokens = 2048

// run evaluates specs, calling done(i, res, row) for spec i with the result
// of the pass that ran it and its row in that pass.
func (br *batchRunner) run(ctx context.Context, specs []rowSpec, done func(i int, res *gpt2.Result, row int) error) error {
	maxTok := br.maxTokens
	if maxTok <= 0 {
		maxTok = defaultMaxTokens
	}
	rows := max(1, maxTok/len(br.tokens))
	for start := 0; start < len(specs); start += rows {
		if err := ctx.Err(); err != nil {
			return err
		}
		chunk := specs[start:min(start+rows, len(specs))]
		res, err := br.runChunk(ctx, chunk)
		if err != nil {
			return err
		}
		for r := range chunk {
			if err := done(start+r, res, r); err != nil {
				return err
			}
		}
	}
	return nil
}

func (br *batchRunner) runChunk(ctx context.Context, chunk []rowSpec) (*gpt2.Result, error) {
	batch := make([][]int, len(chunk))
	for i := range batch {
		batch[i] = br.tokens
	}
	// byName[name] lists (row, edit) pairs so a hook touches only its edits.
	type rowEdit struct {
		row int
		e   *edit
	}
	byName := map[string][]rowEdit{}
	noisy := false
	for r := range chunk {
		for j := range chunk[r].edits {
			e := &chunk[r].edits[j]
			byName[e.name] = append(byName[e.name], rowEdit{r, e})
		}
		noisy = noisy || chunk[r].noisy > 0
	}
	var hooks []gpt2.Hook
	if noisy {
		if br.noise == nil {
			return nil, fmt.Errorf("analysis: a row asks for embedding noise but none was set up")
		}
		hooks = append(hooks, gpt2.Hook{Match: gpt2.HookName(hookEmbed), Fn: func(a *gpt2.Activation) error {
			p, d := a.Shape[1], a.Shape[2]
			for r, spec := range chunk {
				if spec.noisy == 0 {
					continue
				}
				ns := br.noise.samples[spec.noisy-1]
				for k, pos := range br.noise.positions {
					dst := a.Data[(r*p+pos)*d : (r*p+pos+1)*d]
					for j, v := range ns[k*d : (k+1)*d] {
						dst[j] += v
					}
				}
			}
			return nil
		}})
	}
	if len(byName) > 0 {
		names := make([]string, 0, len(byName))
		for n := range byName {
			names = append(names, n)
		}
		hooks = append(hooks, gpt2.Hook{Match: matchNames(names...), Fn: func(a *gpt2.Activation) error {
			p := a.Shape[1]
			inner := len(a.Data) / (a.Shape[0] * p)
			for _, re := range byName[a.Name] {
				e := re.e
				if e.pos < 0 || e.pos >= p || e.lo < 0 || e.lo+len(e.vals) > inner {
					return fmt.Errorf("analysis: edit of %s at position %d, elements [%d, %d) is outside [%d positions, %d]", a.Name, e.pos, e.lo, e.lo+len(e.vals), p, inner)
				}
				off := (re.row*p+e.pos)*inner + e.lo
				copy(a.Data[off:off+len(e.vals)], e.vals)
			}
			return nil
		}})
	}
	return br.m.Run(ctx, batch, gpt2.RunOptions{Hooks: hooks, Logits: br.logits})
}

// vectorAt returns the vector of a batch-1 (or any-row) activation at (row, pos).
func vectorAt(a *gpt2.Activation, row, pos int) []float32 {
	return a.At(row, pos)
}
