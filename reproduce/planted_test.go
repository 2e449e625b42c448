package reproduce

import (
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/factlens/factlens/gpt2"
	"github.com/factlens/factlens/weights"
)

// The planted model: a two-layer GPT-2 written by hand so that Fact
// Finding's mechanism holds exactly, with one clean AND neuron per fact.
//
// Prompts are "T {first} {last} p"; the 30 athletes are the pairs (i, j)
// of 6 first names " A"…" F" and 6 last names " G"…" M" with i ≠ j, and
// athlete (i, j) plays sport (i + j) mod 4 of " w", " x", " y", " z" — so
// neither name alone tells the sport. The residual stream (32 dims) holds:
//
//	0, 1    an anchor (±8 in every token embedding) that keeps LayerNorm
//	        scales near 2
//	2–7     first-name identity        8–13  last-name identity
//	14      the relation " p"          15–20 "the previous token was first name i"
//	21–24   the sport                  25–28 T, BOS, sport tokens, others
//	29–31   small random position embeddings
//
// Layer 0's head 0 attends from a last name to the first name and copies
// its identity into dims 15–20; MLP 0 neuron n(i, j) fires only for
// "previous first name i AND current last name j" and writes the sport of
// (i, j). Layer 1's head 0 attends from " p" to the last name and copies
// the sport dims; the unembedding reads each sport from its dim. MLP 1 and
// everything else are zero.
var updatePlanted = flag.Bool("update-planted", false, "rewrite testdata/planted from writePlanted")

const (
	plantedFirst, plantedLast = 6, 6
	plantedD, plantedDMLP     = 32, 32
)

var plantedNames = struct{ first, last, sports []string }{
	first:  []string{"A", "B", "C", "D", "E", "F"},
	last:   []string{"G", "H", "J", "K", "L", "M"},
	sports: []string{"w", "x", "y", "z"},
}

// plantedVocab lists the tokens in id order, in vocab.json's byte-level form.
func plantedVocab() []string {
	v := []string{"<|endoftext|>"}
	for _, group := range [][]string{plantedNames.first, plantedNames.last, {"p"}, plantedNames.sports} {
		for _, s := range group {
			v = append(v, "Ġ"+s)
		}
	}
	v = append(v, "T", "Ġ")
	for _, group := range [][]string{plantedNames.first, plantedNames.last, {"p"}, plantedNames.sports} {
		v = append(v, group...)
	}
	return v
}

// plantedAthletes lists the planted facts.
func plantedAthletes() []Athlete {
	var out []Athlete
	for i := 0; i < plantedFirst; i++ {
		for j := 0; j < plantedLast; j++ {
			if i != j {
				out = append(out, Athlete{Name: plantedNames.first[i] + " " + plantedNames.last[j], Sport: plantedNames.sports[(i+j)%4]})
			}
		}
	}
	return out
}

// writePlanted writes the planted model folder (config.json,
// model.safetensors, vocab.json, merges.txt, facts.jsonl) into dir.
func writePlanted(dir string) error {
	vocab := plantedVocab()
	id := map[string]int{}
	for i, t := range vocab {
		id[t] = i
	}
	tied := false
	inner := plantedDMLP
	cfg := weights.DefaultConfig()
	cfg.VocabSize, cfg.NPositions, cfg.NCtx, cfg.NEmbd, cfg.NLayer, cfg.NHead = len(vocab), 16, 16, plantedD, 2, 2
	cfg.NInner, cfg.TieWordEmbeddings, cfg.BOSTokenID, cfg.EOSTokenID = &inner, &tied, 0, 0
	const d = plantedD
	params := map[string][]float32{}
	var tensors []weights.Tensor
	specs := append(cfg.ParamSpecs(), weights.ParamSpec{Name: "lm_head.weight", Shape: []int{cfg.VocabSize, d}})
	for _, s := range specs {
		if _, dup := params[s.Name]; dup {
			continue
		}
		n := 1
		for _, x := range s.Shape {
			n *= x
		}
		params[s.Name] = make([]float32, n)
		if strings.HasSuffix(s.Name, "ln_1.weight") || strings.HasSuffix(s.Name, "ln_2.weight") || s.Name == "ln_f.weight" {
			for k := range params[s.Name] {
				params[s.Name][k] = 1
			}
		}
		tensors = append(tensors, weights.Tensor{Name: s.Name, Shape: s.Shape, Data: params[s.Name]})
	}
	set := func(name string, cols, r, c int, v float32) { params[name][r*cols+c] = v }
	// Token embeddings.
	for t, tok := range vocab {
		set("wte.weight", d, t, 0, 8)
		set("wte.weight", d, t, 1, -8)
		dim := 28
		switch {
		case t == 0:
			dim = 26
		case tok == "T":
			dim = 25
		case tok == "Ġp":
			dim = 14
		}
		for i, s := range plantedNames.first {
			if tok == "Ġ"+s {
				dim = 2 + i
			}
		}
		for j, s := range plantedNames.last {
			if tok == "Ġ"+s {
				dim = 8 + j
			}
		}
		for _, s := range plantedNames.sports {
			if tok == "Ġ"+s {
				dim = 27
			}
		}
		set("wte.weight", d, t, dim, 1)
	}
	rng := rand.New(rand.NewPCG(7, 7))
	for p := 0; p < cfg.NPositions; p++ {
		for j := 29; j < 32; j++ {
			set("wpe.weight", d, p, j, float32(rng.NormFloat64()*0.1))
		}
	}
	const qk0, v0, w, b, qk1, v1, g = 12, 2.1, 10, -6.5, 12, 3, 5
	// Layer 0, head 0: last name → first name; copy its identity.
	for k := 0; k < plantedLast; k++ {
		set("h.0.attn.c_attn.weight", 3*d, 8+k, 0, qk0)
	}
	for i := 0; i < plantedFirst; i++ {
		set("h.0.attn.c_attn.weight", 3*d, 2+i, d, qk0)
		set("h.0.attn.c_attn.weight", 3*d, 2+i, 2*d+i, v0)
		set("h.0.attn.c_proj.weight", d, i, 15+i, 1)
	}
	// MLP 0: one AND neuron per athlete.
	n := 0
	for i := 0; i < plantedFirst; i++ {
		for j := 0; j < plantedLast; j++ {
			if i == j {
				continue
			}
			set("h.0.mlp.c_fc.weight", plantedDMLP, 8+j, n, w)
			set("h.0.mlp.c_fc.weight", plantedDMLP, 15+i, n, w)
			params["h.0.mlp.c_fc.bias"][n] = b
			set("h.0.mlp.c_proj.weight", d, n, 21+(i+j)%4, 1)
			n++
		}
	}
	// Layer 1, head 0: " p" → last name; copy the sport.
	set("h.1.attn.c_attn.weight", 3*d, 14, 0, qk1)
	for k := 0; k < plantedLast; k++ {
		set("h.1.attn.c_attn.weight", 3*d, 8+k, d, qk1)
	}
	for s := 0; s < 4; s++ {
		set("h.1.attn.c_attn.weight", 3*d, 21+s, 2*d+s, v1)
		set("h.1.attn.c_proj.weight", d, s, 21+s, 1)
		set("lm_head.weight", d, id["Ġ"+plantedNames.sports[s]], 21+s, g)
	}
	if err := weights.SaveCheckpoint(dir, cfg, tensors, weights.SaveOptions{}); err != nil {
		return err
	}
	vj := map[string]int{}
	for i, t := range vocab {
		vj[t] = i
	}
	vb, err := json.Marshal(vj)
	if err != nil {
		return err
	}
	merges := "#version: 0.2\n"
	for _, t := range vocab {
		if strings.HasPrefix(t, "Ġ") && len(t) > len("Ġ") {
			merges += "Ġ " + strings.TrimPrefix(t, "Ġ") + "\n"
		}
	}
	var facts strings.Builder
	for k, a := range plantedAthletes() {
		fmt.Fprintf(&facts, `{"id":"%d","subject":%q,"prompt":"T {} p","target":" %s","relation":"sport"}`+"\n", k, a.Name, a.Sport)
	}
	for name, data := range map[string][]byte{"vocab.json": vb, "merges.txt": []byte(merges), "facts.jsonl": []byte(facts.String())} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

func plantedModel(t testing.TB) (*gpt2.Model, *gpt2.Tokenizer, string) {
	t.Helper()
	dir := t.TempDir()
	if err := writePlanted(dir); err != nil {
		t.Fatal(err)
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
	return m, tok, dir
}

// TestPlantedFilesCurrent checks that testdata/planted, which the Python
// reference reads, is what writePlanted writes. Regenerate it with
//
//	go test ./reproduce -run TestPlantedFilesCurrent -update-planted
func TestPlantedFilesCurrent(t *testing.T) {
	dir := t.TempDir()
	if err := writePlanted(dir); err != nil {
		t.Fatal(err)
	}
	want := filepath.Join("testdata", "planted")
	if *updatePlanted {
		if err := os.MkdirAll(want, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"config.json", "model.safetensors", "vocab.json", "merges.txt", "facts.jsonl"} {
		got, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if *updatePlanted {
			if err := os.WriteFile(filepath.Join(want, name), got, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		committed, err := os.ReadFile(filepath.Join(want, name))
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(committed) {
			t.Errorf("testdata/planted/%s differs from writePlanted's; rerun with -update-planted and regenerate the golden", name)
		}
	}
}
