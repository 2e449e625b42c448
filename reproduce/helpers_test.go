package reproduce

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/factlens/factlens/gpt2"
	"github.com/factlens/factlens/weights"
)

const (
	sharedData      = "../../shared/data"
	sharedTokenizer = sharedData + "/gpt2-tokenizer"
	knownFacts      = sharedData + "/facts/rome/known_1000.json"
	lreSport        = sharedData + "/facts/lre/person_plays_pro_sport.json"
)

// randomGPT2 writes a random GPT-2-shaped checkpoint (GPT-2's vocabulary
// and layout, toy widths) with GPT-2's tokenizer files beside it, and opens
// it as --model DIR would.
func randomGPT2(t testing.TB) (*gpt2.Model, *gpt2.Tokenizer) {
	t.Helper()
	dir := t.TempDir()
	cfg := weights.DefaultConfig()
	cfg.NLayer, cfg.NEmbd, cfg.NHead, cfg.NPositions, cfg.NCtx = 2, 16, 2, 64, 64
	rng := rand.New(rand.NewPCG(1, 2))
	tensors := weights.RandomTensors(cfg, rng, 0.2)
	if err := weights.SaveCheckpoint(dir, cfg, tensors, weights.SaveOptions{AttnBiasBuffers: true}); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"vocab.json", "merges.txt"} {
		b, err := os.ReadFile(filepath.Join(sharedTokenizer, f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ck, err := weights.OpenCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ck.Close() })
	m, err := gpt2.FromCheckpoint(ck, gpt2.Processing{})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := gpt2.LoadTokenizer(dir)
	if err != nil {
		t.Fatal(err)
	}
	return m, tok
}
