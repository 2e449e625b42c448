package analysis

import (
	"context"
	"fmt"

	"github.com/factlens/factlens/gpt2"
)

// ActivationsAt runs every prompt (grouped by length, batched, without
// padding) and returns, for prompt i, the vectors of the per-layer hook point
// point ("mlp.hook_post", "hook_resid_post", …) at positions[i], layer after
// layer in the order of layers: one row of len(layers)·width values per
// prompt. The forward stops after the last layer asked for.
func ActivationsAt(ctx context.Context, m *gpt2.Model, prompts [][]int, positions []int, point string, layers []int) ([][]float32, error) {
	if len(positions) != len(prompts) {
		return nil, fmt.Errorf("analysis: %d positions for %d prompts", len(positions), len(prompts))
	}
	if len(layers) == 0 {
		return nil, fmt.Errorf("analysis: no layers to read")
	}
	names := make([]string, len(layers))
	for i, l := range layers {
		if l < 0 || l >= m.NLayer() {
			return nil, fmt.Errorf("analysis: layer %d outside the model's %d", l, m.NLayer())
		}
		names[i] = blockHook(l, point)
		if err := m.CheckHookName(names[i]); err != nil {
			return nil, fmt.Errorf("analysis: %w", err)
		}
	}
	byLen := map[int][]int{}
	var lens []int
	for i, toks := range prompts {
		if err := checkTokens(m, toks); err != nil {
			return nil, fmt.Errorf("%w (prompt %d)", err, i)
		}
		if positions[i] < 0 || positions[i] >= len(toks) {
			return nil, fmt.Errorf("analysis: prompt %d: position %d outside its %d tokens", i, positions[i], len(toks))
		}
		if _, ok := byLen[len(toks)]; !ok {
			lens = append(lens, len(toks))
		}
		byLen[len(toks)] = append(byLen[len(toks)], i)
	}
	out := make([][]float32, len(prompts))
	match := matchNames(names...)
	for _, n := range lens {
		idx := byLen[n]
		rows := max(1, defaultMaxTokens/n)
		for s := 0; s < len(idx); s += rows {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			chunk := idx[s:min(s+rows, len(idx))]
			batch := make([][]int, len(chunk))
			for r, i := range chunk {
				batch[r] = prompts[i]
			}
			res, err := m.Run(ctx, batch, gpt2.RunOptions{Cache: match, Logits: gpt2.LogitsNone})
			if err != nil {
				return nil, fmt.Errorf("analysis: reading %s: %w", point, err)
			}
			for r, i := range chunk {
				var row []float32
				for _, name := range names {
					row = append(row, res.Cache[name].At(r, positions[i])...)
				}
				out[i] = row
			}
		}
	}
	return out, nil
}
