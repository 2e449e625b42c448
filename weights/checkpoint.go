package weights

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// File names of Hugging Face checkpoints.
const (
	ConfigFileName     = "config.json"
	ModelFileName      = "model.safetensors"
	ShardIndexFileName = "model.safetensors.index.json"
)

// Checkpoint is a GPT-2 checkpoint whose every parameter has been checked
// against its config. Params is keyed by canonical name (see ParamSpecs; plus
// lm_head.weight when the file stores one). Params of F32 files alias the
// read-only mappings: never write to them, and do not use them after Close.
type Checkpoint struct {
	Config *Config
	Source Source
	Params map[string]*Param

	files []*SafetensorsFile
}

// OpenCheckpoint opens a local GPT-2 checkpoint. path may be
//
//   - a folder with config.json and model.safetensors,
//   - a folder with config.json, model.safetensors.index.json and the shards
//     its weight_map names (used when there is no model.safetensors, as
//     Hugging Face does),
//   - a .safetensors file or a model.safetensors.index.json with config.json
//     beside it.
//
// Names are accepted with or without the "transformer." prefix; the causal
// mask buffers h.N.attn.bias and h.N.attn.masked_bias are skipped whatever
// their dtype. Every parameter is checked against the config, and all
// missing, unexpected and misshapen tensors are reported together in one
// *MismatchError. F16 and BF16 tensors are converted to float32 here; F32
// tensors are not copied.
func OpenCheckpoint(path string) (*Checkpoint, error) {
	dir, files, index, err := locateCheckpoint(path)
	if err != nil {
		return nil, err
	}
	cfg, err := ReadConfig(filepath.Join(dir, ConfigFileName))
	if err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("weights: %w", err)
	}
	c := &Checkpoint{Config: cfg, Source: Source{Ref: path, Dir: abs}, Params: map[string]*Param{}}
	if err := c.load(dir, files, index); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// locateCheckpoint finds the folder holding config.json and the safetensors
// files to open. index is non-nil for sharded checkpoints.
func locateCheckpoint(path string) (dir string, files []string, index *shardIndex, err error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", nil, nil, fmt.Errorf("weights: %w", err)
	}
	var indexPath string
	if st.IsDir() {
		dir = path
		single := filepath.Join(dir, ModelFileName)
		if _, err := os.Stat(single); err == nil {
			return dir, []string{single}, nil, nil
		}
		indexPath = filepath.Join(dir, ShardIndexFileName)
		if _, err := os.Stat(indexPath); err != nil {
			hint := ""
			for _, other := range []string{"pytorch_model.bin", "model.bin", "tf_model.h5", "flax_model.msgpack"} {
				if _, err := os.Stat(filepath.Join(dir, other)); err == nil {
					hint = fmt.Sprintf("; %s is not supported, only safetensors", other)
				}
			}
			return "", nil, nil, fmt.Errorf("weights: %s: no %s or %s%s", dir, ModelFileName, ShardIndexFileName, hint)
		}
	} else {
		dir = filepath.Dir(path)
		switch {
		case strings.HasSuffix(path, ".index.json"):
			indexPath = path
		case strings.HasSuffix(path, ".safetensors"):
			return dir, []string{path}, nil, nil
		default:
			return "", nil, nil, fmt.Errorf("weights: %s: want a folder, a .safetensors file or a %s", path, ShardIndexFileName)
		}
	}
	index, err = readShardIndex(indexPath)
	if err != nil {
		return "", nil, nil, err
	}
	for _, shard := range index.shards() {
		files = append(files, filepath.Join(dir, shard))
	}
	return dir, files, index, nil
}

// shardIndex is model.safetensors.index.json.
type shardIndex struct {
	path      string
	WeightMap map[string]string `json:"weight_map"`
}

func readShardIndex(path string) (*shardIndex, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("weights: %w", err)
	}
	idx := &shardIndex{path: path}
	if err := json.Unmarshal(b, idx); err != nil {
		return nil, fmt.Errorf("weights: %s: %v", path, err)
	}
	if len(idx.WeightMap) == 0 {
		return nil, fmt.Errorf("weights: %s: empty or missing weight_map", path)
	}
	for name, shard := range idx.WeightMap {
		if shard == "" || shard != filepath.Base(shard) || shard == "." || shard == ".." {
			return nil, fmt.Errorf("weights: %s: tensor %q: shard %q must be a file name in the same folder", path, name, shard)
		}
	}
	return idx, nil
}

// shards lists the distinct shard files, sorted.
func (idx *shardIndex) shards() []string {
	set := map[string]bool{}
	for _, s := range idx.WeightMap {
		set[s] = true
	}
	out := make([]string, 0, len(set))
	for s := range set {
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

// located is one stored tensor and the file that holds it.
type located struct {
	raw  string // name as stored
	file *SafetensorsFile
	info TensorInfo
}

func (c *Checkpoint) load(dir string, paths []string, index *shardIndex) error {
	e := &MismatchError{Where: c.Source.Ref}
	stored := map[string]located{} // by canonical name
	for _, p := range paths {
		f, err := OpenSafetensors(p)
		if err != nil {
			return err
		}
		c.files = append(c.files, f)
		for _, t := range f.Tensors() {
			if index != nil {
				if want, ok := index.WeightMap[t.Name]; !ok {
					e.Problems = append(e.Problems, fmt.Sprintf("%s: stored in %s but not listed in %s", t.Name, filepath.Base(p), ShardIndexFileName))
					continue
				} else if want != filepath.Base(p) {
					e.Problems = append(e.Problems, fmt.Sprintf("%s: stored in %s but %s says %s", t.Name, filepath.Base(p), ShardIndexFileName, want))
					continue
				}
			}
			name := canonicalName(t.Name)
			if prev, ok := stored[name]; ok {
				e.Problems = append(e.Problems, fmt.Sprintf("%s: stored twice, as %s in %s and as %s in %s",
					name, prev.raw, filepath.Base(prev.file.Path()), t.Name, filepath.Base(p)))
				continue
			}
			stored[name] = located{raw: t.Name, file: f, info: t}
		}
	}
	if index != nil {
		var notFound []string
		for name, shard := range index.WeightMap {
			if _, ok := stored[canonicalName(name)]; !ok {
				notFound = append(notFound, fmt.Sprintf("%s: listed in %s for %s but not stored there", name, ShardIndexFileName, shard))
			}
		}
		sort.Strings(notFound)
		e.Problems = append(e.Problems, notFound...)
	}

	have := map[string][]int{}
	for name, l := range stored {
		if !isAttnBuffer(name, c.Config.NLayer) {
			have[name] = l.info.Shape
		}
	}
	matched := checkNames(c.Config, have, e)
	for i, name := range e.Unexpected {
		e.Unexpected[i] = stored[name].raw
	}
	for _, s := range matched {
		l := stored[s.Name]
		data, err := l.file.Float32(l.raw)
		if err != nil {
			e.Problems = append(e.Problems, fmt.Sprintf("%s: dtype %s, want F32, F16 or BF16", s.Name, l.info.DType))
			continue
		}
		c.Params[s.Name] = &Param{Name: s.Name, Shape: l.info.Shape, Data: data, StoredDType: l.info.DType}
	}
	if !e.empty() {
		return e
	}
	return nil
}

// Unembedding is the [vocab, d] matrix that maps the final residual stream to
// logits: lm_head.weight when the checkpoint stores one, else wte.weight.
// (A tied checkpoint that stores lm_head anyway stores a copy of wte.)
func (c *Checkpoint) Unembedding() *Param {
	if p, ok := c.Params[LMHeadName]; ok {
		return p
	}
	return c.Params["wte.weight"]
}

// Tensors returns every parameter in model order (lm_head last when stored),
// sharing data with the checkpoint — the form SaveCheckpoint takes.
func (c *Checkpoint) Tensors() []Tensor {
	specs := c.Config.ParamSpecs()
	if _, ok := c.Params[LMHeadName]; ok {
		specs = append(specs, c.Config.lmHeadSpec())
	}
	out := make([]Tensor, 0, len(specs))
	for _, s := range specs {
		if p, ok := c.Params[s.Name]; ok {
			out = append(out, Tensor{Name: p.Name, Shape: p.Shape, Data: p.Data})
		}
	}
	return out
}

// Close unmaps the checkpoint's files and clears Params' data, so that a
// later use fails with an index error instead of a fault.
func (c *Checkpoint) Close() error {
	var errs []error
	for _, f := range c.files {
		errs = append(errs, f.Close())
	}
	c.files = nil
	for _, p := range c.Params {
		p.Data = nil
	}
	return errors.Join(errs...)
}
