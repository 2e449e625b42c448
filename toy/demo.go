package toy

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/factlens/factlens/weights"
)

// The demo model ships inside the binary so that `factlens demo` runs
// offline. Regenerate it (deterministic on one machine; the binary embeds
// the current files, so train elsewhere and copy) with
//
//	rm -rf /tmp/toy-demo && go run ./cmd/factlens toy train --demo /tmp/toy-demo && cp /tmp/toy-demo/* toy/testdata/demo/
//
//go:embed testdata/demo
var demoFiles embed.FS

// DemoOptions are the settings of the shipped demo model: 512 people with a
// sport and a city each (1,024 facts, 4 values per relation), GPT-2's
// architecture with 1 layer, d_model 32, 1 head and 64 MLP neurons.
func DemoOptions() Options {
	return Options{
		World: WorldConfig{Seed: 1, People: 512, Relations: []string{"sport", "city"}, Values: 4},
		Model: ModelConfig{Layers: 1, DModel: 32, Heads: 1, DMLP: 64, Activation: "gelu_new"},
		Train: TrainConfig{Seed: 1, LR: 1e-3, Beta1: 0.9, Beta2: 0.99, BatchSize: 128, MaxSteps: 20000, MinSteps: 8000, EvalEvery: 250, Patience: 10, SaveEvery: 2000},
	}
}

// DemoFS is the demo model folder: config.json, model.safetensors,
// vocab.json, merges.txt, world.json, facts.jsonl and training.json.
func DemoFS() fs.FS {
	sub, err := fs.Sub(demoFiles, "testdata/demo")
	if err != nil {
		panic(err) // the embedded path is a constant
	}
	return sub
}

// WriteDemo writes the demo model folder into dir (created if needed).
func WriteDemo(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("toy: demo: %w", err)
	}
	return fs.WalkDir(DemoFS(), ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(DemoFS(), path)
		if err != nil {
			return fmt.Errorf("toy: demo: %w", err)
		}
		return weights.WriteFileBytesAtomic(filepath.Join(dir, path), b)
	})
}

// DemoDir returns a folder holding the demo model, usable as --model DIR:
// root/toy-demo-<hash of the weights>, written on first use. Concurrent
// callers are safe: the folder is filled under a temporary name and renamed
// into place.
func DemoDir(root string) (string, error) {
	weights, err := fs.ReadFile(DemoFS(), "model.safetensors")
	if err != nil {
		return "", fmt.Errorf("toy: demo: %w", err)
	}
	sum := sha256.Sum256(weights)
	dir := filepath.Join(root, "toy-demo-"+hex.EncodeToString(sum[:6]))
	if IsToyModel(dir) {
		return dir, nil
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return "", fmt.Errorf("toy: demo: %w", err)
	}
	tmp, err := os.MkdirTemp(root, ".toy-demo-")
	if err != nil {
		return "", fmt.Errorf("toy: demo: %w", err)
	}
	defer os.RemoveAll(tmp)
	if err := WriteDemo(tmp); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, dir); err != nil {
		if IsToyModel(dir) { // another process won the race
			return dir, nil
		}
		return "", fmt.Errorf("toy: demo: %w", err)
	}
	return dir, nil
}
