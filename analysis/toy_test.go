package analysis

import (
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"github.com/factlens/factlens/gpt2"
	"github.com/factlens/factlens/weights"
)

// The planted toy model: two layers, two heads, eight neurons, written by
// hand so that every analysis has a known right answer.
//
// Tokens (testdata/toy-tokenizer): first names " A" " B" " C", last names
// " X" " Y" " Z", the relation " p", sports " q" " r" " u" " v", the filler
// "T". Prompts look like "T A X p"; the facts are (A, X) → " q" and
// (B, Y) → " r".
//
// The residual stream (24 dims) holds, besides a large anchor (dims 0, 1:
// ±8 in every token embedding, so LayerNorm scales stay near 2.3):
//
//	2–4   first-name identity (A, B, C)        9–11  "previous token was first name A/B/C"
//	5–7   last-name identity (X, Y, Z)         12,13 sport signal for " q", " r"
//	8     the relation " p"                     15    the detector's junk output
//
// Layer 0, head 0 attends from a last name to the first name (query reads
// dims 5–7, key dims 2–4) and copies its identity into dims 9–11. Neuron 1
// fires only for "previous A AND current X" (pre-activation 2 vs −2 for one
// part, −6 for neither) and writes dim 12; neuron 3 is the same gate for
// (B, Y) writing dim 13; neuron 2 fires on X alone (a single-token detector)
// and writes only junk dim 15. Layer 1, head 0 attends from " p" to the last
// name and copies dims 12, 13; the unembedding reads " q" from dim 12 and
// " r" from dim 13. Everything else is zero.
const (
	toyA, toyB, toyC = 1, 2, 3
	toyX, toyY, toyZ = 4, 5, 6
	toyP             = 7
	toyQ, toyR       = 8, 9 // sports of (A, X) and (B, Y)
	toyT             = 12
	toyBOS           = 0

	toyAND     = 1 // neuron: A AND X → " q"
	toyDetect  = 2 // neuron: X alone → junk
	toyAND2    = 3 // neuron: B AND Y → " r"
	toyMover   = 0 // head 0 of layer 1
	toyPrevTok = 0 // head 0 of layer 0
)

func toyConfig() *weights.Config {
	tied := false
	inner := 8
	return &weights.Config{
		ModelType: "gpt2", VocabSize: 25, NPositions: 16, NEmbd: 24, NLayer: 2, NHead: 2,
		NInner: &inner, ActivationFunction: "gelu_new", LayerNormEpsilon: 1e-5,
		BOSTokenID: toyBOS, EOSTokenID: toyBOS, TieWordEmbeddings: &tied,
	}
}

// toyCheckpoint builds the planted weights; seed only fills the position
// embeddings (dims 16–19, small) so that hook_pos_embed is not trivially 0.
func toyCheckpoint(seed uint64) *weights.Checkpoint {
	cfg := toyConfig()
	ck := &weights.Checkpoint{Config: cfg, Params: map[string]*weights.Param{}}
	specs := append(cfg.ParamSpecs(), weights.ParamSpec{Name: "lm_head.weight", Shape: []int{cfg.VocabSize, cfg.NEmbd}})
	for _, s := range specs {
		n := 1
		for _, v := range s.Shape {
			n *= v
		}
		ck.Params[s.Name] = &weights.Param{Name: s.Name, Shape: s.Shape, Data: make([]float32, n), StoredDType: "F32"}
	}
	const d, dm, dh = 24, 8, 12
	set := func(name string, cols, r, c int, v float32) { ck.Params[name].Data[r*cols+c] = v }
	for _, ln := range []string{"h.0.ln_1.weight", "h.0.ln_2.weight", "h.1.ln_1.weight", "h.1.ln_2.weight", "ln_f.weight"} {
		for i := range ck.Params[ln].Data {
			ck.Params[ln].Data[i] = 1
		}
	}
	// Token embeddings: anchor plus one identity dimension.
	identity := map[int]int{toyA: 2, toyB: 3, toyC: 4, toyX: 5, toyY: 6, toyZ: 7, toyP: 8, toyT: 14, toyBOS: 20}
	for tok := 0; tok < cfg.VocabSize; tok++ {
		set("wte.weight", d, tok, 0, 8)
		set("wte.weight", d, tok, 1, -8)
		dim, ok := identity[tok]
		switch {
		case ok:
		case tok >= toyQ && tok <= 11:
			dim = 22
		default:
			dim = 21
		}
		set("wte.weight", d, tok, dim, 1)
	}
	rng := rand.New(rand.NewPCG(seed, 7))
	for p := 0; p < cfg.NPositions; p++ {
		for j := 16; j < 20; j++ {
			set("wpe.weight", d, p, j, float32(rng.NormFloat64()*0.1))
		}
	}
	// Layer 0, head 0: last name → first name, copy identity to dims 9–11.
	const qk0, v0 = 14.2, 2.42
	for i := 0; i < 3; i++ {
		set("h.0.attn.c_attn.weight", 3*d, 5+i, 0*d+toyPrevTok*dh, qk0)  // q
		set("h.0.attn.c_attn.weight", 3*d, 2+i, 1*d+toyPrevTok*dh, qk0)  // k
		set("h.0.attn.c_attn.weight", 3*d, 2+i, 2*d+toyPrevTok*dh+i, v0) // v
		set("h.0.attn.c_proj.weight", d, toyPrevTok*dh+i, 9+i, 1)
	}
	// Layer 0 MLP.
	const w, out = 10.1, 1
	set("h.0.mlp.c_fc.weight", dm, 5, toyAND, w) // current X
	set("h.0.mlp.c_fc.weight", dm, 9, toyAND, w) // previous A
	ck.Params["h.0.mlp.c_fc.bias"].Data[toyAND] = -6
	set("h.0.mlp.c_proj.weight", d, toyAND, 12, out)
	set("h.0.mlp.c_fc.weight", dm, 6, toyAND2, w)  // current Y
	set("h.0.mlp.c_fc.weight", dm, 10, toyAND2, w) // previous B
	ck.Params["h.0.mlp.c_fc.bias"].Data[toyAND2] = -6
	set("h.0.mlp.c_proj.weight", d, toyAND2, 13, out)
	set("h.0.mlp.c_fc.weight", dm, 5, toyDetect, w) // X alone
	ck.Params["h.0.mlp.c_fc.bias"].Data[toyDetect] = -2
	set("h.0.mlp.c_proj.weight", d, toyDetect, 15, out)
	// Layer 1, head 0: " p" → last name, copy the sport signals.
	const qk1, v1 = 14.6, 3
	set("h.1.attn.c_attn.weight", 3*d, 8, 0*d+toyMover*dh, qk1)
	for i := 0; i < 3; i++ {
		set("h.1.attn.c_attn.weight", 3*d, 5+i, 1*d+toyMover*dh, qk1)
	}
	for i := 0; i < 2; i++ {
		set("h.1.attn.c_attn.weight", 3*d, 12+i, 2*d+toyMover*dh+i, v1)
		set("h.1.attn.c_proj.weight", d, toyMover*dh+i, 12+i, 1)
	}
	// Unembedding.
	const g = 8
	set("lm_head.weight", d, toyQ, 12, g)
	set("lm_head.weight", d, toyR, 13, g)
	return ck
}

func toyModel(t testing.TB, p gpt2.Processing) *gpt2.Model {
	t.Helper()
	m, err := gpt2.FromCheckpoint(toyCheckpoint(1), p)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func toyTokenizer(t testing.TB) *gpt2.Tokenizer {
	t.Helper()
	dir := filepath.Join("testdata", "toy-tokenizer")
	tok, err := gpt2.LoadTokenizerFiles(filepath.Join(dir, "vocab.json"), filepath.Join(dir, "merges.txt"))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// randomCheckpoint builds a checkpoint with cfg's shapes and seeded random
// weights of standard deviation std (GPT-2 initialises with 0.02), with LayerNorm weights
// around 1 and biases around 0 drawn at random too (so that folding them is
// not trivial), and an untied lm_head when cfg says so.
func randomCheckpoint(cfg *weights.Config, seed uint64, std float64) *weights.Checkpoint {
	rng := rand.New(rand.NewPCG(seed, 0))
	ck := &weights.Checkpoint{Config: cfg, Params: map[string]*weights.Param{}}
	specs := cfg.ParamSpecs()
	if !cfg.TiedEmbeddings() {
		specs = append(specs, weights.ParamSpec{Name: "lm_head.weight", Shape: []int{cfg.VocabSize, cfg.NEmbd}})
	}
	for _, s := range specs {
		n := 1
		for _, v := range s.Shape {
			n *= v
		}
		data := make([]float32, n)
		isLN := strings.HasPrefix(s.Name, "ln_f.") || containsAny(s.Name, ".ln_1.", ".ln_2.")
		for i := range data {
			switch {
			case isLN && strings.HasSuffix(s.Name, ".weight"):
				data[i] = float32(1 + 0.2*rng.NormFloat64())
			case isLN:
				data[i] = float32(0.1 * rng.NormFloat64())
			default:
				data[i] = float32(std * rng.NormFloat64())
			}
		}
		ck.Params[s.Name] = &weights.Param{Name: s.Name, Shape: s.Shape, Data: data, StoredDType: "F32"}
	}
	return ck
}

func containsAny(s string, subs ...string) bool {
	for _, x := range subs {
		if strings.Contains(s, x) {
			return true
		}
	}
	return false
}

// smallConfig is a random-weight GPT-2 with real structure but tiny sizes.
func smallConfig() *weights.Config {
	tied := false
	return &weights.Config{
		ModelType: "gpt2", VocabSize: 97, NPositions: 32, NEmbd: 32, NLayer: 3, NHead: 4,
		ActivationFunction: "gelu_new", LayerNormEpsilon: 1e-5, BOSTokenID: 96, EOSTokenID: 96, TieWordEmbeddings: &tied,
	}
}

func smallModel(t testing.TB, p gpt2.Processing) *gpt2.Model {
	t.Helper()
	m, err := gpt2.FromCheckpoint(randomCheckpoint(smallConfig(), 3, 0.3), p)
	if err != nil {
		t.Fatal(err)
	}
	return m
}
