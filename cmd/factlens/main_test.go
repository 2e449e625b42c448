package main

import (
	"bytes"
	"encoding/json"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/factlens/factlens/weights"
)

const sharedTokenizer = "../../../shared/data/gpt2-tokenizer"

// tinyConfig is GPT-2's architecture at toy width with the real vocabulary,
// so the real tokenizer drives it.
func tinyConfig() *weights.Config {
	cfg := weights.DefaultConfig()
	cfg.NLayer, cfg.NEmbd, cfg.NHead, cfg.NPositions, cfg.NCtx = 2, 16, 2, 32, 32
	return cfg
}

var (
	tinyOnce sync.Once
	tinyDir  string
	tinyErr  error
)

// tinyCheckpoint writes (once per test binary) a random GPT-2 checkpoint in
// openai-community/gpt2's layout, with GPT-2's real tokenizer files beside it.
func tinyCheckpoint(t *testing.T) string {
	t.Helper()
	tinyOnce.Do(func() {
		dir, err := os.MkdirTemp("", "factlens-cli-")
		if err != nil {
			tinyErr = err
			return
		}
		tinyDir = dir
		cfg := tinyConfig()
		rng := rand.New(rand.NewPCG(1, 2))
		tensors := weights.RandomTensors(cfg, rng, 0.2)
		if tinyErr = weights.SaveCheckpoint(dir, cfg, tensors, weights.SaveOptions{AttnBiasBuffers: true}); tinyErr != nil {
			return
		}
		for _, f := range []string{"vocab.json", "merges.txt"} {
			b, err := os.ReadFile(filepath.Join(sharedTokenizer, f))
			if err != nil {
				tinyErr = err
				return
			}
			if tinyErr = os.WriteFile(filepath.Join(dir, f), b, 0o644); tinyErr != nil {
				return
			}
		}
	})
	if tinyErr != nil {
		t.Fatalf("tiny checkpoint: %v", tinyErr)
	}
	return tinyDir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if tinyDir != "" {
		os.RemoveAll(tinyDir)
	}
	os.Exit(code)
}

type outcome struct {
	code           int
	stdout, stderr string
}

// factlens runs one invocation in-process with an empty, offline Hub cache.
func factlens(t *testing.T, stdin string, args ...string) outcome {
	t.Helper()
	cache := t.TempDir()
	env := map[string]string{"HF_HUB_CACHE": cache, "HF_HUB_OFFLINE": "1", "HF_HOME": cache}
	var stdout, stderr bytes.Buffer
	code := run(args, strings.NewReader(stdin), &stdout, &stderr, func(k string) string { return env[k] })
	return outcome{code, stdout.String(), stderr.String()}
}

func TestInspectCountsParameters(t *testing.T) {
	dir := tinyCheckpoint(t)
	out := factlens(t, "", "inspect", "--model", dir, "--format", "json")
	if out.code != 0 {
		t.Fatalf("exit %d: %s", out.code, out.stderr)
	}
	var res inspectResult
	if err := json.Unmarshal([]byte(out.stdout), &res); err != nil {
		t.Fatal(err)
	}
	// GPT-2's parameter count by hand: embeddings, per block 2 LayerNorms,
	// c_attn, c_proj, c_fc, c_proj (weights and biases), final LayerNorm.
	const v, p, d, l = 50257, 32, 16, 2
	want := int64(v*d + p*d + l*(2*2*d+(d*3*d+3*d)+(d*d+d)+(d*4*d+4*d)+(4*d*d+d)) + 2*d)
	if res.Parameters != want {
		t.Errorf("parameters = %d, want %d", res.Parameters, want)
	}
	if res.Bytes != 4*want {
		t.Errorf("bytes = %d, want %d", res.Bytes, 4*want)
	}
	if len(res.Tensors) != 4+12*l {
		t.Errorf("%d tensors, want %d", len(res.Tensors), 4+12*l)
	}
	text := factlens(t, "", "inspect", "--model", dir)
	if text.code != 0 || !strings.Contains(text.stdout, "h.1.mlp.c_fc.weight") {
		t.Errorf("text inspect: exit %d\n%s", text.code, text.stdout)
	}
}

func TestTokenizeMatchesGPT2(t *testing.T) {
	dir := tinyCheckpoint(t)
	// Ids from OpenAI's encoder.py (Python regex) for this prompt.
	want := []int{13256, 8078, 5341, 262, 6332, 286}
	out := factlens(t, "", "tokenize", "--model", dir, "--format", "json", "Michael Jordan plays the sport of")
	if out.code != 0 {
		t.Fatalf("exit %d: %s", out.code, out.stderr)
	}
	var res tokenizeResult
	if err := json.Unmarshal([]byte(out.stdout), &res); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.IDs, want) {
		t.Errorf("ids = %v, want %v", res.IDs, want)
	}
	if strings.Join(res.Tokens, "") != "Michael Jordan plays the sport of" {
		t.Errorf("tokens %q do not spell the prompt", res.Tokens)
	}
	// Standard input keeps the surrounding whitespace.
	out = factlens(t, "  hi\n", "tokenize", "--model", dir, "--format", "json", "-")
	if err := json.Unmarshal([]byte(out.stdout), &res); err != nil {
		t.Fatal(err)
	}
	if strings.Join(res.Tokens, "") != "  hi\n" {
		t.Errorf("stdin tokens %q lose whitespace", res.Tokens)
	}
}

func TestCacheWritesHookTensors(t *testing.T) {
	dir := tinyCheckpoint(t)
	file := filepath.Join(t.TempDir(), "acts.safetensors")
	out := factlens(t, "", "cache", "--model", dir, "--hooks", "blocks.*.mlp.hook_post", "--out", file, "Michael Jordan plays the sport of")
	if out.code != 0 {
		t.Fatalf("exit %d: %s", out.code, out.stderr)
	}
	f, err := weights.OpenSafetensors(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var names []string
	shapes := map[string][]int{}
	for _, ti := range f.Tensors() {
		names = append(names, ti.Name)
		shapes[ti.Name] = ti.Shape
	}
	wantNames := []string{"blocks.0.mlp.hook_post", "blocks.1.mlp.hook_post", "logits"}
	if !slices.Equal(names, wantNames) {
		t.Fatalf("tensors %v, want %v", names, wantNames)
	}
	if !slices.Equal(shapes["blocks.1.mlp.hook_post"], []int{1, 6, 64}) || !slices.Equal(shapes["logits"], []int{1, 6, 50257}) {
		t.Errorf("shapes %v", shapes)
	}
	meta := f.Metadata()
	if meta["token_ids"] != "[13256,8078,5341,262,6332,286]" || meta["weight_processing"] != "raw Hugging Face" {
		t.Errorf("metadata %v", meta)
	}
	// GELU's output is bounded below by about -0.17: a sanity check that the
	// tensor holds post-activation values.
	post, _ := f.Float32("blocks.0.mlp.hook_post")
	if slices.Min(post) < -0.1701 {
		t.Errorf("hook_post minimum %v is below GELU's range", slices.Min(post))
	}
}

func TestExitStatusAndMessages(t *testing.T) {
	dir := tinyCheckpoint(t)
	long := strings.Repeat(" the", 40)
	tests := []struct {
		name     string
		args     []string
		code     int
		contains string
	}{
		{"unknown command", []string{"frobnicate"}, 1, "unknown command"},
		{"unknown flag", []string{"run", "--nope", "x"}, 1, "unknown flag"},
		{"missing argument", []string{"run"}, 1, "Usage:"},
		{"empty prompt", []string{"run", "--model", dir, ""}, 1, "empty prompt"},
		{"prompt too long", []string{"run", "--model", dir, long}, 2, "40 tokens long; " + dir + " takes at most 32"},
		{"missing folder", []string{"run", "--model", "./no/such/dir", "hi"}, 2, "no/such/dir"},
		{"not cached offline", []string{"inspect", "--model", "gpt2"}, 2, "config.json"},
		{"unknown hook", []string{"cache", "--model", dir, "--hooks", "blocks.0.mlp.hook_pots", "--out", filepath.Join(t.TempDir(), "x.safetensors"), "hi"}, 2, "blocks.0.mlp.hook_post"},
		{"bad processing", []string{"run", "--model", dir, "--processing", "xx", "hi"}, 1, "--processing"},
		{"bad format", []string{"run", "--model", dir, "--format", "pdf", "hi"}, 1, "--format"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := factlens(t, "", tt.args...)
			if out.code != tt.code {
				t.Errorf("exit %d, want %d; stderr:\n%s", out.code, tt.code, out.stderr)
			}
			if !strings.Contains(out.stderr, tt.contains) {
				t.Errorf("stderr lacks %q:\n%s", tt.contains, out.stderr)
			}
			if tt.code == 2 && strings.Count(strings.TrimSpace(out.stderr), "\n") != 0 {
				t.Errorf("failure message is not one line:\n%s", out.stderr)
			}
		})
	}
}

var _ = io.Discard
