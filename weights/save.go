package weights

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// SaveOptions chooses which of the real-world GPT-2 checkpoint layouts
// SaveCheckpoint writes. The zero value writes what current transformers
// writes for GPT-2: unprefixed names, tied embeddings, one F32 file.
type SaveOptions struct {
	// Prefix names every tensor but lm_head.weight "transformer.…", as
	// GPT2LMHeadModel.save_pretrained does.
	Prefix bool
	// LMHead stores lm_head.weight: the params' own if given, else a copy of
	// wte.weight. It is always stored when params include it.
	LMHead bool
	// AttnBiasBuffers stores the causal masks h.N.attn.bias
	// [1, 1, n_positions, n_positions] (1 on and below the diagonal), as
	// openai-community/gpt2's model.safetensors does.
	AttnBiasBuffers bool
	// DType is "F32" (default when empty), "F16" or "BF16".
	DType string
	// ShardBytes > 0 splits the data into shards of at most this many bytes
	// (a larger tensor gets a shard of its own), named
	// model-00001-of-0000N.safetensors, plus model.safetensors.index.json.
	ShardBytes int64
	// ShuffleOrder stores each file's data in a seeded pseudo-random order
	// that differs from its header order.
	ShuffleOrder bool
}

// shardPattern matches the shard names SaveCheckpoint (and transformers) uses.
var shardPattern = regexp.MustCompile(`^model-\d{5}-of-\d{5}\.safetensors$`)

// SaveCheckpoint writes config.json and the weights into dir (created if
// needed) in the layout opts describes. params are canonical names (see
// ParamSpecs, plus optionally lm_head.weight), in any order; they are checked
// against cfg exactly as OpenCheckpoint checks a file, and written in model
// order. Every file is written to a temporary file and renamed. Files of the
// other layout left in dir by an earlier save (model.safetensors, the index,
// model-NNNNN-of-NNNNN.safetensors shards) are removed afterwards so that
// OpenCheckpoint reads what was just written.
func SaveCheckpoint(dir string, cfg *Config, params []Tensor, opts SaveOptions) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	dtype := opts.DType
	if dtype == "" {
		dtype = "F32"
	}
	if dtype != "F32" && dtype != "F16" && dtype != "BF16" {
		return fmt.Errorf("weights: save %s: dtype %q, want F32, F16 or BF16", dir, dtype)
	}
	byName := make(map[string]Tensor, len(params))
	have := make(map[string][]int, len(params))
	e := &MismatchError{Where: "save " + dir}
	for _, t := range params {
		if _, dup := byName[t.Name]; dup {
			e.Problems = append(e.Problems, t.Name+": given twice")
		}
		byName[t.Name] = t
		have[t.Name] = t.Shape
	}
	specs := checkNames(cfg, have, e)
	if !e.empty() {
		return e
	}

	var entries []rawEntry
	add := func(name string, shape []int, data []float32) error {
		if name != LMHeadName && opts.Prefix {
			name = transformerPrefix + name
		}
		en, err := floatEntry(Tensor{Name: name, Shape: shape, Data: data}, dtype)
		if err != nil {
			return fmt.Errorf("weights: save %s: %w", dir, err)
		}
		entries = append(entries, en)
		return nil
	}
	var mask []float32
	if opts.AttnBiasBuffers {
		n := cfg.NPositions
		mask = make([]float32, n*n)
		for i := 0; i < n; i++ {
			for j := 0; j <= i; j++ {
				mask[i*n+j] = 1
			}
		}
	}
	for _, s := range specs {
		if layer, ok := strings.CutSuffix(s.Name, "c_attn.weight"); ok && opts.AttnBiasBuffers {
			if err := add(layer+"bias", []int{1, 1, cfg.NPositions, cfg.NPositions}, mask); err != nil {
				return err
			}
		}
		if err := add(s.Name, s.Shape, byName[s.Name].Data); err != nil {
			return err
		}
	}
	if _, ok := byName[LMHeadName]; !ok && opts.LMHead {
		wte := byName["wte.weight"]
		if err := add(LMHeadName, wte.Shape, wte.Data); err != nil {
			return err
		}
	}

	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("weights: save: %w", err)
	}
	metadata := map[string]string{"format": "pt"} // transformers refuses files without it
	keep := map[string]bool{}
	if opts.ShardBytes <= 0 {
		if err := writeEntries(filepath.Join(dir, ModelFileName), entries, metadata, saveOrder(len(entries), opts, 0)); err != nil {
			return err
		}
		keep[ModelFileName] = true
	} else {
		shards := splitShards(entries, opts.ShardBytes)
		weightMap := map[string]string{}
		var total int64
		for i, shard := range shards {
			name := fmt.Sprintf("model-%05d-of-%05d.safetensors", i+1, len(shards))
			if err := writeEntries(filepath.Join(dir, name), shard, metadata, saveOrder(len(shard), opts, uint64(i))); err != nil {
				return err
			}
			for _, en := range shard {
				weightMap[en.name] = name
				total += en.nbytes
			}
			keep[name] = true
		}
		index := struct {
			Metadata  map[string]int64  `json:"metadata"`
			WeightMap map[string]string `json:"weight_map"`
		}{map[string]int64{"total_size": total}, weightMap}
		if err := writeJSONAtomic(filepath.Join(dir, ShardIndexFileName), index); err != nil {
			return err
		}
		keep[ShardIndexFileName] = true
	}
	if err := writeJSONAtomic(filepath.Join(dir, ConfigFileName), cfg); err != nil {
		return err
	}
	return removeStale(dir, keep)
}

func saveOrder(n int, opts SaveOptions, shard uint64) []int {
	if !opts.ShuffleOrder {
		return nil
	}
	order := shuffledOrder(n, 1+shard)
	if n > 1 && isIdentity(order) {
		// Guarantee out-of-order data, which is what the option promises.
		for i, j := 0, n-1; i < j; i, j = i+1, j-1 {
			order[i], order[j] = order[j], order[i]
		}
	}
	return order
}

func isIdentity(order []int) bool {
	for i, v := range order {
		if i != v {
			return false
		}
	}
	return true
}

func splitShards(entries []rawEntry, limit int64) [][]rawEntry {
	var shards [][]rawEntry
	var cur []rawEntry
	var size int64
	for _, en := range entries {
		if len(cur) > 0 && size+en.nbytes > limit {
			shards = append(shards, cur)
			cur, size = nil, 0
		}
		cur = append(cur, en)
		size += en.nbytes
	}
	if len(cur) > 0 {
		shards = append(shards, cur)
	}
	return shards
}

func writeJSONAtomic(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("weights: write %s: %w", path, err)
	}
	b = append(b, '\n')
	return WriteFileAtomic(path, func(w io.Writer) error {
		_, err := w.Write(b)
		return err
	})
}

// removeStale deletes weight files of a previous save that the new layout
// does not use.
func removeStale(dir string, keep map[string]bool) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("weights: save: %w", err)
	}
	for _, ent := range ents {
		name := ent.Name()
		if keep[name] || ent.IsDir() {
			continue
		}
		if name == ModelFileName || name == ShardIndexFileName || shardPattern.MatchString(name) {
			if err := os.Remove(filepath.Join(dir, name)); err != nil {
				return fmt.Errorf("weights: save: removing stale %s: %w", name, err)
			}
		}
	}
	return nil
}

// RandomTensors draws every parameter of cfg from a normal distribution with
// standard deviation std, LayerNorm weights around 1 (1 + noise), for tests,
// benchmarks and synthetic checkpoints that must not depend on downloaded
// weights. lm_head.weight is left out when cfg ties it to wte. The values
// depend only on cfg, rng's state and std.
func RandomTensors(cfg *Config, rng *rand.Rand, std float64) []Tensor {
	var tensors []Tensor
	for _, spec := range cfg.ParamSpecs() {
		if spec.Name == "lm_head.weight" && cfg.TiedEmbeddings() {
			continue
		}
		n := 1
		for _, d := range spec.Shape {
			n *= d
		}
		data := make([]float32, n)
		for i := range data {
			data[i] = float32(rng.NormFloat64() * std)
		}
		if strings.HasSuffix(spec.Name, "ln_1.weight") || strings.HasSuffix(spec.Name, "ln_2.weight") || spec.Name == "ln_f.weight" {
			for i := range data {
				data[i]++
			}
		}
		tensors = append(tensors, Tensor{Name: spec.Name, Shape: spec.Shape, Data: data})
	}
	return tensors
}
