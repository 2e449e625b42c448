package weights

import (
	"encoding/json"
	"errors"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// tinyConfig is a valid GPT-2 small enough for every test to build quickly.
func tinyConfig() *Config {
	c := DefaultConfig()
	c.VocabSize, c.NPositions, c.NEmbd, c.NLayer, c.NHead = 13, 8, 8, 2, 2
	c.BOSTokenID, c.EOSTokenID = 12, 12
	return c
}

// tinyParams fills every parameter of cfg with seeded values.
func tinyParams(cfg *Config, seed uint64) []Tensor {
	r := rand.New(rand.NewPCG(seed, 1))
	var out []Tensor
	for _, s := range cfg.ParamSpecs() {
		n := 1
		for _, d := range s.Shape {
			n *= d
		}
		data := make([]float32, n)
		for i := range data {
			data[i] = float32(r.NormFloat64() * 0.1)
		}
		out = append(out, Tensor{Name: s.Name, Shape: s.Shape, Data: data})
	}
	return out
}

func TestCheckpointLayoutsLoadTheSameParams(t *testing.T) {
	cfg := tinyConfig()
	params := tinyParams(cfg, 42)
	want := map[string][]float32{}
	for _, p := range params {
		want[p.Name] = p.Data
	}
	layouts := []struct {
		name string
		opts SaveOptions
		tol  float64 // relative error allowed by the stored dtype
	}{
		{"plain", SaveOptions{}, 0},
		{"prefixed", SaveOptions{Prefix: true}, 0},
		{"lm_head", SaveOptions{LMHead: true}, 0},
		{"openai-community/gpt2", SaveOptions{AttnBiasBuffers: true}, 0},
		{"shuffled", SaveOptions{ShuffleOrder: true}, 0},
		{"sharded", SaveOptions{ShardBytes: 1000}, 0},
		{"everything", SaveOptions{Prefix: true, LMHead: true, AttnBiasBuffers: true, ShardBytes: 700, ShuffleOrder: true}, 0},
		{"F16", SaveOptions{DType: "F16", AttnBiasBuffers: true}, 1.0 / 2048},
		{"BF16 sharded", SaveOptions{DType: "BF16", ShardBytes: 500, Prefix: true}, 1.0 / 256},
	}
	var f16Ref map[string][]float32
	for _, l := range layouts {
		t.Run(l.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "ckpt")
			if err := SaveCheckpoint(dir, cfg, params, l.opts); err != nil {
				t.Fatal(err)
			}
			paths := []string{dir}
			if l.opts.ShardBytes > 0 {
				paths = append(paths, filepath.Join(dir, ShardIndexFileName))
				if idx, err := readShardIndex(paths[1]); err != nil || len(idx.shards()) < 3 {
					t.Errorf("want at least 3 shards: %v %v", idx, err)
				}
			} else {
				paths = append(paths, filepath.Join(dir, ModelFileName))
			}
			for _, path := range paths {
				c, err := OpenCheckpoint(path)
				if err != nil {
					t.Fatal(err)
				}
				if c.Source.Ref != path || !filepath.IsAbs(c.Source.Dir) || filepath.Base(c.Source.Dir) != "ckpt" {
					t.Errorf("Source %+v", c.Source)
				}
				if c.Config.NInner != nil || c.Config.DInner() != 32 || c.Config.NLayer != 2 {
					t.Errorf("config round trip: %+v", c.Config)
				}
				wantN := len(params)
				if l.opts.LMHead {
					wantN++
				}
				if len(c.Params) != wantN {
					t.Errorf("%d params, want %d", len(c.Params), wantN)
				}
				for name, w := range want {
					p := c.Params[name]
					if p == nil {
						t.Fatalf("no %s", name)
					}
					wantDType := l.opts.DType
					if wantDType == "" {
						wantDType = "F32"
					}
					if p.StoredDType != wantDType || p.Name != name {
						t.Errorf("%s: %+v", name, p)
					}
					for i := range w {
						if d := math.Abs(float64(p.Data[i] - w[i])); d > l.tol*math.Abs(float64(w[i])) {
							t.Fatalf("%s[%d] = %v, want %v", name, i, p.Data[i], w[i])
						}
					}
				}
				if l.opts.DType == "F16" {
					f16Ref = map[string][]float32{}
					for n, p := range c.Params {
						f16Ref[n] = append([]float32(nil), p.Data...)
					}
				}
				u := c.Unembedding()
				if l.opts.LMHead != (u.Name == LMHeadName) || !equalFloats(u.Data, c.Params["wte.weight"].Data) {
					t.Errorf("Unembedding is %s", u.Name)
				}
				if err := c.Close(); err != nil {
					t.Fatal(err)
				}
				if c.Params["wte.weight"].Data != nil {
					t.Error("Close left Param data in place")
				}
			}
		})
	}
	// F16 rounding is deterministic: a sharded, prefixed F16 save must load
	// to exactly the same values as the plain F16 one.
	dir := filepath.Join(t.TempDir(), "f16b")
	if err := SaveCheckpoint(dir, cfg, params, SaveOptions{DType: "F16", Prefix: true, ShardBytes: 300, ShuffleOrder: true}); err != nil {
		t.Fatal(err)
	}
	c, err := OpenCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for n, p := range c.Params {
		if !equalFloats(p.Data, f16Ref[n]) {
			t.Errorf("%s differs between F16 layouts", n)
		}
	}
}

func equalFloats(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return false
		}
	}
	return true
}

func TestCheckpointF32IsNotCopied(t *testing.T) {
	cfg := tinyConfig()
	dir := t.TempDir()
	if err := SaveCheckpoint(dir, cfg, tinyParams(cfg, 1), SaveOptions{AttnBiasBuffers: true, Prefix: true, ShuffleOrder: true}); err != nil {
		t.Fatal(err)
	}
	c, err := OpenCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for name, p := range c.Params {
		if !inMapping(c.files[0], p.Data) {
			t.Errorf("%s was copied", name)
		}
	}
}

// TestPythonTinyCheckpoints loads the checkpoints written by
// testdata/make_safetensors_golden.py in two real layouts and compares every
// value with the bits numpy recorded.
func TestPythonTinyCheckpoints(t *testing.T) {
	g := readGolden(t)
	var ckpts map[string]struct {
		Unembedding string `json:"unembedding"`
		Params      map[string]struct {
			Shape   []int    `json:"shape"`
			DType   string   `json:"dtype"`
			F32Bits []uint32 `json:"f32_bits"`
		} `json:"params"`
	}
	if err := json.Unmarshal(g["checkpoints"], &ckpts); err != nil {
		t.Fatal(err)
	}
	if len(ckpts) != 2 {
		t.Fatalf("%d golden checkpoints", len(ckpts))
	}
	for name, want := range ckpts {
		t.Run(name, func(t *testing.T) {
			c, err := OpenCheckpoint(filepath.Join("testdata", "golden", name))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if len(c.Params) != len(want.Params) {
				t.Errorf("%d params, want %d", len(c.Params), len(want.Params))
			}
			for pn, w := range want.Params {
				p := c.Params[pn]
				if p == nil {
					t.Fatalf("missing %s", pn)
				}
				if !sameShape(p.Shape, w.Shape) || p.StoredDType != w.DType {
					t.Errorf("%s: shape %v dtype %s, want %v %s", pn, p.Shape, p.StoredDType, w.Shape, w.DType)
				}
				for i := range w.F32Bits {
					if !sameFloatBits(p.Data[i], w.F32Bits[i]) {
						t.Fatalf("%s[%d] = %#08x, want %#08x", pn, i, math.Float32bits(p.Data[i]), w.F32Bits[i])
					}
				}
			}
			if u := c.Unembedding(); u.Name != want.Unembedding {
				t.Errorf("Unembedding %s, want %s", u.Name, want.Unembedding)
			}
		})
	}
}

// writeCheckpointFiles writes config.json and a model.safetensors holding
// exactly tensors (names as given), bypassing SaveCheckpoint's checks.
func writeCheckpointFiles(t *testing.T, cfg *Config, tensors []Tensor) string {
	t.Helper()
	dir := t.TempDir()
	if err := WriteSafetensors(filepath.Join(dir, ModelFileName), tensors, nil); err != nil {
		t.Fatal(err)
	}
	if err := writeJSONAtomic(filepath.Join(dir, ConfigFileName), cfg); err != nil {
		t.Fatal(err)
	}
	return dir
}

func without(ts []Tensor, names ...string) []Tensor {
	var out []Tensor
next:
	for _, t := range ts {
		for _, n := range names {
			if t.Name == n {
				continue next
			}
		}
		out = append(out, t)
	}
	return out
}

func TestOpenCheckpointMismatches(t *testing.T) {
	cfg := tinyConfig()
	good := tinyParams(cfg, 3)
	reshaped := func(name string, shape []int) []Tensor {
		out := append([]Tensor(nil), good...)
		for i := range out {
			if out[i].Name == name {
				n := 1
				for _, d := range shape {
					n *= d
				}
				out[i] = Tensor{Name: name, Shape: shape, Data: make([]float32, n)}
			}
		}
		return out
	}
	extra := Tensor{Name: "h.0.attn.rotary", Shape: []int{2}, Data: []float32{1, 2}}
	outOfRangeBuffer := Tensor{Name: "h.9.attn.bias", Shape: []int{1}, Data: []float32{1}}
	for _, tc := range []struct {
		name                                string
		tensors                             []Tensor
		cfg                                 func(*Config)
		wantMissing, wantUnexpected, wantIn []string
	}{
		{name: "wrong shape", tensors: reshaped("h.1.mlp.c_fc.weight", []int{8, 31}),
			wantIn: []string{"weights: h.1.mlp.c_fc.weight: shape [8 31], config wants [8 32]"}},
		{name: "config disagrees", tensors: good, cfg: func(c *Config) { n := 31; c.NInner = &n },
			wantIn: []string{"h.0.mlp.c_fc.weight: shape [8 32], config wants [8 31]", "h.1.mlp.c_proj.weight: shape [32 8], config wants [31 8]"}},
		{name: "missing", tensors: without(good, "ln_f.bias", "h.0.attn.c_proj.weight"),
			wantMissing: []string{"h.0.attn.c_proj.weight", "ln_f.bias"}},
		{name: "unexpected", tensors: append(append([]Tensor(nil), good...), extra, outOfRangeBuffer),
			wantUnexpected: []string{"h.0.attn.rotary", "h.9.attn.bias"}},
		{name: "all at once", tensors: append(without(reshaped("wpe.weight", []int{9, 8}), "wte.weight"), extra),
			wantMissing: []string{"wte.weight"}, wantUnexpected: []string{"h.0.attn.rotary"},
			wantIn: []string{"wpe.weight: shape [9 8], config wants [8 8]", "1 missing tensor(s): wte.weight", "1 unexpected tensor(s): h.0.attn.rotary"}},
		{name: "untied needs lm_head", tensors: good, cfg: func(c *Config) { f := false; c.TieWordEmbeddings = &f },
			wantMissing: []string{"lm_head.weight"}},
		{name: "prefixed and plain", tensors: append(append([]Tensor(nil), good...), Tensor{Name: "transformer.ln_f.bias", Shape: []int{8}, Data: make([]float32, 8)}),
			wantIn: []string{"ln_f.bias: stored twice, as ln_f.bias in model.safetensors and as transformer.ln_f.bias"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tinyConfig()
			if tc.cfg != nil {
				tc.cfg(c)
			}
			dir := writeCheckpointFiles(t, c, tc.tensors)
			_, err := OpenCheckpoint(dir)
			var me *MismatchError
			if !errors.As(err, &me) {
				t.Fatalf("error %v, want a *MismatchError", err)
			}
			if strings.Join(me.Missing, ",") != strings.Join(tc.wantMissing, ",") {
				t.Errorf("Missing %v, want %v", me.Missing, tc.wantMissing)
			}
			if strings.Join(me.Unexpected, ",") != strings.Join(tc.wantUnexpected, ",") {
				t.Errorf("Unexpected %v, want %v", me.Unexpected, tc.wantUnexpected)
			}
			for _, s := range tc.wantIn {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q lacks %q", err, s)
				}
			}
			if !strings.Contains(err.Error(), dir) {
				t.Errorf("error %q does not name %s", err, dir)
			}
		})
	}
}

func TestOpenCheckpointNonFloatParam(t *testing.T) {
	cfg := tinyConfig()
	dir := t.TempDir()
	var entries []rawEntry
	for _, p := range tinyParams(cfg, 5) {
		e, _ := floatEntry(p, "F32")
		if p.Name == "ln_f.weight" {
			e = rawEntry{name: p.Name, dtype: "I64", shape: p.Shape, nbytes: 8 * 8,
				write: func(w io.Writer) error { _, err := w.Write(make([]byte, 64)); return err }}
		}
		entries = append(entries, e)
	}
	// A BOOL causal mask, as recent transformers versions register it, is skipped.
	entries = append(entries, rawEntry{name: "h.0.attn.bias", dtype: "BOOL", shape: []int{1, 1, 8, 8}, nbytes: 64,
		write: func(w io.Writer) error { _, err := w.Write(make([]byte, 64)); return err }})
	if err := writeEntries(filepath.Join(dir, ModelFileName), entries, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := writeJSONAtomic(filepath.Join(dir, ConfigFileName), cfg); err != nil {
		t.Fatal(err)
	}
	_, err := OpenCheckpoint(dir)
	if err == nil || !strings.Contains(err.Error(), "ln_f.weight: dtype I64, want F32, F16 or BF16") || strings.Contains(err.Error(), "h.0.attn.bias") {
		t.Errorf("error %v", err)
	}
}

func TestOpenCheckpointBadPaths(t *testing.T) {
	cfg := tinyConfig()
	good := t.TempDir()
	if err := SaveCheckpoint(good, cfg, tinyParams(cfg, 9), SaveOptions{ShardBytes: 2000}); err != nil {
		t.Fatal(err)
	}
	shards := shardOf(t, good)
	first, last := shards["wte.weight"], shards["ln_f.bias"]
	if first == last || !shardPattern.MatchString(first) {
		t.Fatalf("want several shards, have %v", shards)
	}
	setup := func(t *testing.T, edit func(dir string)) string {
		dir := t.TempDir()
		ents, _ := os.ReadDir(good)
		for _, e := range ents {
			b, _ := os.ReadFile(filepath.Join(good, e.Name()))
			os.WriteFile(filepath.Join(dir, e.Name()), b, 0o644)
		}
		edit(dir)
		return dir
	}
	editIndex := func(dir string, f func(m map[string]string)) {
		var idx map[string]any
		b, _ := os.ReadFile(filepath.Join(dir, ShardIndexFileName))
		json.Unmarshal(b, &idx)
		wm := map[string]string{}
		for k, v := range idx["weight_map"].(map[string]any) {
			wm[k] = v.(string)
		}
		f(wm)
		idx["weight_map"] = wm
		writeJSONAtomic(filepath.Join(dir, ShardIndexFileName), idx)
	}
	for _, tc := range []struct {
		name string
		edit func(dir string)
		want string
	}{
		{"no weights", func(dir string) {
			os.Remove(filepath.Join(dir, ShardIndexFileName))
			os.WriteFile(filepath.Join(dir, "pytorch_model.bin"), []byte("x"), 0o644)
		}, "no model.safetensors or model.safetensors.index.json; pytorch_model.bin is not supported"},
		{"no config", func(dir string) { os.Remove(filepath.Join(dir, ConfigFileName)) }, "config.json: no such file"},
		{"bad config", func(dir string) {
			os.WriteFile(filepath.Join(dir, ConfigFileName), []byte(`{"model_type":"gpt2","activation_function":"swish"}`), 0o644)
		}, `activation_function "swish" is not supported`},
		{"missing shard", func(dir string) { os.Remove(filepath.Join(dir, first)) }, first + ": no such file"},
		{"index not json", func(dir string) { os.WriteFile(filepath.Join(dir, ShardIndexFileName), []byte("{"), 0o644) }, "model.safetensors.index.json: unexpected end"},
		{"shard path escapes", func(dir string) {
			editIndex(dir, func(m map[string]string) { m["wte.weight"] = "../x.safetensors" })
		}, `tensor "wte.weight": shard "../x.safetensors" must be a file name in the same folder`},
		{"index names wrong shard", func(dir string) {
			editIndex(dir, func(m map[string]string) { m["ln_f.bias"] = first })
		}, "ln_f.bias: stored in " + last + " but model.safetensors.index.json says " + first},
		{"index omits tensor", func(dir string) {
			editIndex(dir, func(m map[string]string) { delete(m, "ln_f.bias") })
		}, "ln_f.bias: stored in " + last + " but not listed"},
		{"index lists absent tensor", func(dir string) {
			editIndex(dir, func(m map[string]string) { m["h.7.ln_1.weight"] = first })
		}, "h.7.ln_1.weight: listed in model.safetensors.index.json for " + first + " but not stored there"},
		{"corrupt shard", func(dir string) {
			os.WriteFile(filepath.Join(dir, last), []byte("garbage!garbage"), 0o644)
		}, last + ": header length"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := setup(t, tc.edit)
			c, err := OpenCheckpoint(dir)
			if err == nil {
				c.Close()
				t.Fatalf("no error, want %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want %q", err, tc.want)
			}
		})
	}
	if _, err := OpenCheckpoint(filepath.Join(good, ConfigFileName)); err == nil || !strings.Contains(err.Error(), "want a folder") {
		t.Errorf("config.json as path: %v", err)
	}
	if _, err := OpenCheckpoint(filepath.Join(good, "nope")); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Errorf("missing path: %v", err)
	}
}

func TestSaveCheckpointRefuses(t *testing.T) {
	cfg := tinyConfig()
	good := tinyParams(cfg, 4)
	bad := append([]Tensor(nil), good...)
	bad[0] = Tensor{Name: "wte.weight", Shape: []int{13, 8}, Data: make([]float32, 5)}
	for _, tc := range []struct {
		name   string
		params []Tensor
		opts   SaveOptions
		want   string
	}{
		{"missing", without(good, "wpe.weight"), SaveOptions{}, "1 missing tensor(s): wpe.weight"},
		{"prefixed input", append(without(good, "ln_f.bias"), Tensor{Name: "transformer.ln_f.bias", Shape: []int{8}, Data: make([]float32, 8)}), SaveOptions{}, "unexpected tensor(s): transformer.ln_f.bias"},
		{"data length", bad, SaveOptions{}, "wte.weight: shape [13 8] holds 104 elements, data has 5"},
		{"dtype", good, SaveOptions{DType: "F64"}, `dtype "F64"`},
		{"twice", append(append([]Tensor(nil), good...), good[3]), SaveOptions{}, good[3].Name + ": given twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "out")
			err := SaveCheckpoint(dir, cfg, tc.params, tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				t.Errorf("wrote %s despite the error", dir)
			}
		})
	}
	bad2 := *cfg
	bad2.NHead = 3
	if err := SaveCheckpoint(t.TempDir(), &bad2, good, SaveOptions{}); err == nil || !strings.Contains(err.Error(), "n_head 3") {
		t.Errorf("invalid config: %v", err)
	}
}

func TestSaveCheckpointReplacesOtherLayout(t *testing.T) {
	cfg := tinyConfig()
	dir := t.TempDir()
	first, second := tinyParams(cfg, 1), tinyParams(cfg, 2)
	if err := SaveCheckpoint(dir, cfg, first, SaveOptions{ShardBytes: 500}); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("keep me"), 0o644)
	if err := SaveCheckpoint(dir, cfg, second, SaveOptions{}); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(dir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if strings.Join(names, " ") != "config.json model.safetensors notes.txt" {
		t.Errorf("files after re-save: %v", names)
	}
	c, err := OpenCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if !equalFloats(c.Params["wte.weight"].Data, second[0].Data) {
		t.Error("loaded the old weights")
	}
}

// shardOf reads the weight_map of dir's shard index.
func shardOf(t *testing.T, dir string) map[string]string {
	t.Helper()
	idx, err := readShardIndex(filepath.Join(dir, ShardIndexFileName))
	if err != nil {
		t.Fatal(err)
	}
	return idx.WeightMap
}

func TestIsAttnBuffer(t *testing.T) {
	for name, want := range map[string]bool{
		"h.0.attn.bias": true, "h.11.attn.masked_bias": true, "h.12.attn.bias": false,
		"h.01.attn.bias": false, "h.0.attn.c_attn.bias": false, "h.-1.attn.bias": false, "attn.bias": false,
	} {
		if got := isAttnBuffer(name, 12); got != want {
			t.Errorf("isAttnBuffer(%q) = %v", name, got)
		}
	}
}

// TestRandomTensorsMakeALoadableCheckpoint checks RandomTensors against the
// config's own shapes through a save and load, and its distribution against
// the requested one (sample statistics, not the generator's code).
func TestRandomTensorsMakeALoadableCheckpoint(t *testing.T) {
	cfg := DefaultConfig()
	cfg.NLayer, cfg.NEmbd, cfg.NHead, cfg.NPositions, cfg.NCtx, cfg.VocabSize = 2, 16, 2, 8, 8, 100
	tensors := RandomTensors(cfg, rand.New(rand.NewPCG(3, 4)), 0.5)
	dir := t.TempDir()
	if err := SaveCheckpoint(dir, cfg, tensors, SaveOptions{}); err != nil {
		t.Fatal(err)
	}
	ck, err := OpenCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	wte := ck.Params["wte.weight"].Data
	var sum, sq float64
	for _, v := range wte {
		sum += float64(v)
		sq += float64(v) * float64(v)
	}
	n := float64(len(wte))
	mean, std := sum/n, math.Sqrt(sq/n-(sum/n)*(sum/n))
	if math.Abs(mean) > 0.05 || math.Abs(std-0.5) > 0.05 {
		t.Errorf("wte mean %.3f std %.3f, want about 0 and 0.5", mean, std)
	}
	var ln float64
	for _, v := range ck.Params["ln_f.weight"].Data {
		ln += float64(v)
	}
	if m := ln / 16; math.Abs(m-1) > 0.5 {
		t.Errorf("ln_f.weight mean %.3f, want about 1", m)
	}
	if _, ok := ck.Params["lm_head.weight"]; ok {
		t.Error("a tied config got an lm_head.weight")
	}
}
