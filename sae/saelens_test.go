package sae

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/factlens/factlens/weights"
)

// vintages/ holds one small SAE in every cfg.json vintage, written with the
// expected outputs by testdata/reference.py (numpy).
type vintageExpected struct {
	X                 []float64 `json:"x"`
	N                 int       `json:"n"`
	NormScalingFactor float64   `json:"norm_scaling_factor"`
	Folders           map[string]struct {
		Acts []float64 `json:"acts"`
		Out  []float64 `json:"out"`
	} `json:"folders"`
}

func loadVintageExpected(t *testing.T) vintageExpected {
	t.Helper()
	b, err := os.ReadFile("testdata/vintages/expected.json")
	if err != nil {
		t.Fatal(err)
	}
	var e vintageExpected
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatal(err)
	}
	return e
}

func TestLoadVintages(t *testing.T) {
	exp := loadVintageExpected(t)
	cases := []struct {
		folder     string
		opts       []LoadOption
		vintage    string
		arch       Architecture
		k          int
		norm       string
		hook       string
		processing Processing
	}{
		{"pre5", nil, "pre5", Standard, 0, NormNone, "blocks.8.hook_resid_pre", Processing{}},
		{"saelens5", nil, "saelens5", Standard, 0, NormNone, "blocks.8.hook_resid_pre", Processing{Known: true, CenterWritingWeights: true}},
		{"saelens6", nil, "saelens6", Standard, 0, NormNone, "blocks.8.hook_resid_pre", Processing{Known: true, CenterWritingWeights: true}},
		{"pre5_topk", nil, "pre5", TopK, 3, NormNone, "blocks.8.hook_resid_pre", Processing{}},
		{"saelens5_topk", nil, "saelens5", TopK, 3, NormNone, "blocks.8.hook_resid_pre", Processing{Known: true, CenterWritingWeights: true}},
		{"saelens5_layer_norm", nil, "saelens5", Standard, 0, NormLayerNorm, "blocks.0.hook_resid_mid", Processing{}},
		{"saelens6_jumprelu", nil, "saelens6", JumpReLU, 0, NormNone, "blocks.8.hook_resid_pre", Processing{Known: true, CenterWritingWeights: true}},
		{"saelens6_constant_norm_rescale", nil, "saelens6", Standard, 0, NormConstantNormRescale, "blocks.8.hook_resid_pre", Processing{Known: true, CenterWritingWeights: true}},
		// Folded on load: the cfg then says none.
		{"pre5_expected_average", []LoadOption{WithNormScalingFactor(exp.NormScalingFactor)}, "pre5", Standard, 0, NormNone, "blocks.8.hook_resid_pre", Processing{}},
	}
	outputs := map[string][]float32{}
	for _, c := range cases {
		t.Run(c.folder, func(t *testing.T) {
			s, err := Load(filepath.Join("testdata/vintages", c.folder), c.opts...)
			if err != nil {
				t.Fatal(err)
			}
			cfg := s.Config
			if s.Origin.Vintage != c.vintage || cfg.Architecture != c.arch || cfg.K != c.k || cfg.Normalization != c.norm ||
				cfg.Metadata.HookName != c.hook || cfg.RequiresProcessing != c.processing {
				t.Errorf("parsed vintage %q arch %q k %d norm %q hook %q processing %+v", s.Origin.Vintage,
					cfg.Architecture, cfg.K, cfg.Normalization, cfg.Metadata.HookName, cfg.RequiresProcessing)
			}
			if cfg.DIn != 8 || cfg.DSAE != 16 || !cfg.ApplyBDecToInput || !cfg.Metadata.PrependBOS {
				t.Errorf("parsed %+v", cfg)
			}
			if c.folder != "saelens5_layer_norm" && cfg.Metadata.ContextSize != 128 {
				t.Errorf("context size %d", cfg.Metadata.ContextSize)
			}
			acts, out, err := s.Reconstruct(f32(exp.X), exp.N)
			if err != nil {
				t.Fatal(err)
			}
			want := exp.Folders[c.folder]
			compareSlices(t, "acts", acts, want.Acts, 1e-5, 1e-5)
			compareSlices(t, "reconstruction", out, want.Out, 1e-5, 1e-5)
			outputs[c.folder] = out
		})
	}
	// The same SAE saved in three vintages gives bit-identical outputs.
	if !slices.Equal(outputs["pre5"], outputs["saelens5"]) || !slices.Equal(outputs["pre5"], outputs["saelens6"]) {
		t.Error("the pre5, saelens5 and saelens6 folders give different outputs")
	}
}

func TestSaveLoadRoundTrip(t *testing.T) {
	s, err := Load("testdata/vintages/saelens5")
	if err != nil {
		t.Fatal(err)
	}
	s.LogSparsity = make([]float32, s.Config.DSAE)
	for j := range s.LogSparsity {
		s.LogSparsity[j] = -float32(j) / 4
	}
	topk, err := Load("testdata/vintages/pre5_topk")
	if err != nil {
		t.Fatal(err)
	}
	jump := &SAE{Config: s.Config, WEnc: s.WEnc, BEnc: s.BEnc, WDec: s.WDec, BDec: s.BDec, Threshold: make([]float32, 16)}
	jump.Config.Architecture = JumpReLU
	for j := range jump.Threshold {
		jump.Threshold[j] = float32(j) / 20
	}
	for _, orig := range []*SAE{s, topk, jump} {
		t.Run(string(orig.Config.Architecture), func(t *testing.T) {
			dir := t.TempDir()
			if err := orig.Save(dir); err != nil {
				t.Fatal(err)
			}
			got, err := Load(dir)
			if err != nil {
				t.Fatal(err)
			}
			if got.Origin.Vintage != "saelens6" {
				t.Errorf("saved vintage %q", got.Origin.Vintage)
			}
			want := orig.Config
			want.DType, want.Device = "float32", "cpu"
			if orig.Origin.Vintage == "pre5" {
				want.DType, want.Device = "torch.float32", "mps"
			}
			gc := got.Config
			if gc.Architecture != want.Architecture || gc.K != want.K || gc.DIn != want.DIn || gc.DSAE != want.DSAE ||
				gc.Metadata.HookName != want.Metadata.HookName || gc.Metadata.ContextSize != want.Metadata.ContextSize ||
				gc.RequiresProcessing != want.RequiresProcessing || gc.Metadata.DatasetPath != want.Metadata.DatasetPath {
				t.Errorf("config changed:\n got %+v\nwant %+v", gc, want)
			}
			for _, p := range [][2][]float32{{got.WEnc, orig.WEnc}, {got.BEnc, orig.BEnc}, {got.WDec, orig.WDec},
				{got.BDec, orig.BDec}, {got.Threshold, orig.Threshold}, {got.LogSparsity, orig.LogSparsity}} {
				if !slices.Equal(p[0], p[1]) {
					t.Error("a tensor changed in the round trip")
				}
			}
			// cfg.json has SAELens 6's shape.
			raw, _ := os.ReadFile(filepath.Join(dir, CfgFile))
			var m map[string]any
			if err := json.Unmarshal(raw, &m); err != nil {
				t.Fatal(err)
			}
			md, _ := m["metadata"].(map[string]any)
			if m["architecture"] != string(want.Architecture) || md == nil || md["hook_name"] != want.Metadata.HookName ||
				md["sae_lens_version"] != "6.0.0" || m["reshape_activations"] != "none" {
				t.Errorf("cfg.json: %s", raw)
			}
			if (want.Architecture == TopK) != (m["k"] != nil) {
				t.Errorf("k in cfg.json: %v", m["k"])
			}
		})
	}
}

// TestLoadErrors feeds broken folders made from the saelens6 one.
func TestLoadErrors(t *testing.T) {
	base, err := os.ReadFile("testdata/vintages/saelens6/cfg.json")
	if err != nil {
		t.Fatal(err)
	}
	weightsFile, err := os.ReadFile("testdata/vintages/saelens6/sae_weights.safetensors")
	if err != nil {
		t.Fatal(err)
	}
	edit := func(f func(m map[string]any)) []byte {
		var m map[string]any
		if err := json.Unmarshal(base, &m); err != nil {
			t.Fatal(err)
		}
		f(m)
		b, _ := json.Marshal(m)
		return b
	}
	cases := []struct {
		name    string
		cfg     []byte
		weights []byte
		want    string
	}{
		{"missing d_in", edit(func(m map[string]any) { delete(m, "d_in") }), weightsFile, "missing field d_in"},
		{"missing d_sae", edit(func(m map[string]any) { delete(m, "d_sae") }), weightsFile, "missing field d_sae"},
		{"missing hook", edit(func(m map[string]any) { delete(m["metadata"].(map[string]any), "hook_name") }), weightsFile, "missing field hook_name"},
		{"d_in mismatch", edit(func(m map[string]any) { m["d_in"] = 9 }), weightsFile, "W_enc has shape [8 16], cfg (d_in 9, d_sae 16) wants [9 16]"},
		{"d_sae mismatch", edit(func(m map[string]any) { m["d_sae"] = 32 }), weightsFile, "wants [8 32]"},
		{"unknown architecture", edit(func(m map[string]any) { m["architecture"] = "gated" }), weightsFile, `unknown architecture "gated"`},
		{"topk without k", edit(func(m map[string]any) { m["architecture"] = "topk" }), weightsFile, "without k"},
		{"k too large", edit(func(m map[string]any) { m["architecture"] = "topk"; m["k"] = 17 }), weightsFile, "k=17"},
		{"unknown normalization", edit(func(m map[string]any) { m["normalize_activations"] = "whiten" }), weightsFile, "unknown normalize_activations"},
		{"factor unknown", edit(func(m map[string]any) { m["normalize_activations"] = NormExpectedAverageOnlyIn }), weightsFile, "norm_scaling_factor"},
		{"d_in not a number", edit(func(m map[string]any) { m["d_in"] = "768" }), weightsFile, "want an integer"},
		{"not JSON", []byte("{d_in: 8"), weightsFile, "not a JSON object"},
		{"unknown activation (saelens5)", edit(func(m map[string]any) {
			md := m["metadata"].(map[string]any)
			delete(m, "metadata")
			m["hook_name"] = md["hook_name"]
			m["activation_fn_str"] = "tanh-relu"
		}), weightsFile, `activation_fn "tanh-relu" is not supported`},
		{"jumprelu without threshold", edit(func(m map[string]any) { m["architecture"] = "jumprelu" }), weightsFile, "no threshold"},
		{"missing weights", base, nil, "sae_weights.safetensors"},
		{"truncated weights", base, weightsFile[:100], "sae_weights.safetensors"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, CfgFile), c.cfg, 0o644); err != nil {
				t.Fatal(err)
			}
			if c.weights != nil {
				if err := os.WriteFile(filepath.Join(dir, WeightsFile), c.weights, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			_, err := Load(dir)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("got %v, want an error containing %q", err, c.want)
			}
		})
	}
	// Shapes of an SAE built in memory are checked too.
	s := &SAE{Config: Config{Architecture: Standard, DIn: 4, DSAE: 8, Normalization: NormNone}}
	if err := s.Validate(); err == nil || !strings.Contains(err.Error(), "W_enc has 0 values") {
		t.Errorf("empty SAE: %v", err)
	}
	if _, err := (&SAE{Config: Config{Architecture: Standard, DIn: 2, DSAE: 2}, WEnc: make([]float32, 4),
		BEnc: make([]float32, 2), WDec: make([]float32, 4), BDec: make([]float32, 2)}).Encode(make([]float32, 3), 2); err == nil {
		t.Error("Encode accepted 3 values for 2 rows of 2")
	}
}

// TestLoadPretrainedFromCache serves a release from a Hub cache laid out as
// huggingface_hub lays it out, offline: the table supplies the processing for
// res-jb and the norm_scaling_factor for mlp-tm.
func TestLoadPretrainedFromCache(t *testing.T) {
	cache := t.TempDir()
	const commit = "0123456789abcdef0123456789abcdef01234567"
	place := func(repo, folder, from string) {
		storage := filepath.Join(cache, "models--"+strings.ReplaceAll(repo, "/", "--"))
		dst := filepath.Join(storage, "snapshots", commit, folder)
		if err := os.MkdirAll(dst, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{CfgFile, WeightsFile} {
			b, err := os.ReadFile(filepath.Join("testdata/vintages", from, f))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dst, f), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		os.MkdirAll(filepath.Join(storage, "refs"), 0o755)
		if err := os.WriteFile(filepath.Join(storage, "refs", "main"), []byte(commit), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	place("jbloom/GPT2-Small-SAEs-Reformatted", "blocks.8.hook_resid_pre", "pre5")
	place("tommmcgrath/gpt2-small-mlp-out-saes", "sae_group_gpt2_blocks.8.hook_mlp_out_24576:v1", "pre5_expected_average")
	hub := &weights.Hub{CacheDir: cache, Offline: true}
	ctx := context.Background()

	s, err := LoadPretrained(ctx, hub, "gpt2-small-res-jb", "blocks.8.hook_resid_pre")
	if err != nil {
		t.Fatal(err)
	}
	if p := s.Config.RequiresProcessing; !p.Known || !p.CenterWritingWeights || p.FoldLN {
		t.Errorf("res-jb processing %+v, want center_writing_weights only", p)
	}
	if s.Origin.Commit != commit || s.Origin.Release != "gpt2-small-res-jb" || s.Origin.Repo != "jbloom/GPT2-Small-SAEs-Reformatted" {
		t.Errorf("origin %+v", s.Origin)
	}

	// mlp-tm: expected_average_only_in with the yaml's factor for layer 8
	// (0.9123762783479742), folded on load.
	tm, err := LoadPretrained(ctx, hub, "gpt2-small-mlp-tm", "blocks.8.hook_mlp_out")
	if err != nil {
		t.Fatal(err)
	}
	plain, err := Load("testdata/vintages/pre5")
	if err != nil {
		t.Fatal(err)
	}
	const f = 0.9123762783479742
	for i, v := range tm.WEnc {
		if d := float64(v) - float64(plain.WEnc[i])*f; d > 1e-6 || d < -1e-6 {
			t.Fatalf("W_enc[%d] = %v, want %v·%v", i, v, plain.WEnc[i], f)
		}
	}
	if tm.Config.Normalization != NormNone || tm.Config.RequiresProcessing.Known {
		t.Errorf("mlp-tm cfg %+v", tm.Config)
	}

	// A Hub repository id with a folder works without the table.
	if _, err := LoadPretrained(ctx, hub, "jbloom/GPT2-Small-SAEs-Reformatted", "blocks.8.hook_resid_pre"); err != nil {
		t.Error(err)
	}
	for _, c := range []struct{ release, id, want string }{
		{"gpt2-small-res-jb", "blocks.99.hook_resid_pre", "has no SAE"},
		{"no-such-release", "x", "neither a known release"},
		{"jbloom/GPT2-Small-SAEs-Reformatted", "blocks.7.hook_resid_pre", "not in the cached snapshot"},
	} {
		if _, err := LoadPretrained(ctx, hub, c.release, c.id); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s %s: %v, want %q", c.release, c.id, err, c.want)
		}
	}
}
