package toy

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"

	"github.com/factlens/factlens/gpt2"
	"github.com/factlens/factlens/weights"
)

// Files a toy model folder holds besides a GPT-2 checkpoint's config.json,
// model.safetensors, vocab.json and merges.txt.
const (
	WorldFile     = "world.json"            // the World, the ground truth
	FactsFile     = "facts.jsonl"           // the facts in analysis.ReadFactsJSONL's format
	TrainingFile  = "training.json"         // TrainState: settings, progress, recall history
	OptimizerFile = "optimizer.safetensors" // Adam moments, for resuming; not needed to run the model
)

// ModelConfig is the architecture of a toy model: GPT-2's, small. The
// defaults (1 layer, d_model 32, 1 head, 64 neurons) make the MLP the place
// where facts are stored: with more heads or layers, attention and
// LayerNorm alone memorise thousands of name pairs (a 2-layer, d_model 32,
// 2-head model with a single MLP neuron per layer recalls all 1,024 facts of
// the demo world), and the MLP is no longer what a capacity sweep measures.
type ModelConfig struct {
	Layers int `json:"layers"`  // 0 means 1
	DModel int `json:"d_model"` // 0 means 32
	Heads  int `json:"heads"`   // 0 means 1
	DMLP   int `json:"d_mlp"`   // MLP neurons per layer; 0 means 64
	// Activation is a config.json activation_function: "gelu_new"
	// (GPT-2's, the default), "gelu" or "relu".
	Activation string `json:"activation"`
}

// ContextLength is n_positions of every toy model: the longest template is 7
// tokens, plus BOS, with room to spare.
const ContextLength = 16

func (c ModelConfig) withDefaults() (ModelConfig, error) {
	if c.Layers == 0 {
		c.Layers = 1
	}
	if c.DModel == 0 {
		c.DModel = 32
	}
	if c.Heads == 0 {
		c.Heads = 1
	}
	if c.DMLP == 0 {
		c.DMLP = 64
	}
	if c.Activation == "" {
		c.Activation = weights.ActivationGELUTanh
	}
	switch {
	case c.Layers < 1 || c.Layers > 8:
		return c, fmt.Errorf("toy: %d layers: want 1..8", c.Layers)
	case c.DModel < 4 || c.DModel > 1024:
		return c, fmt.Errorf("toy: d_model %d: want 4..1024", c.DModel)
	case c.Heads < 1 || c.DModel%c.Heads != 0:
		return c, fmt.Errorf("toy: %d heads do not divide d_model %d", c.Heads, c.DModel)
	case c.DMLP < 1 || c.DMLP > 1<<16:
		return c, fmt.Errorf("toy: d_mlp %d: want 1..65536", c.DMLP)
	}
	return c, nil
}

// WeightsConfig is the config.json of a toy model with this architecture and
// vocabulary: a GPT-2 config that every factlens command loads.
func (c ModelConfig) WeightsConfig(vocab *Vocabulary) (*weights.Config, error) {
	c, err := c.withDefaults()
	if err != nil {
		return nil, err
	}
	cfg := weights.DefaultConfig()
	cfg.Architectures = []string{"GPT2LMHeadModel"}
	cfg.VocabSize = vocab.Size()
	cfg.NPositions, cfg.NCtx = ContextLength, ContextLength
	cfg.NEmbd, cfg.NLayer, cfg.NHead = c.DModel, c.Layers, c.Heads
	inner := c.DMLP
	cfg.NInner = &inner
	cfg.ActivationFunction = c.Activation
	cfg.BOSTokenID, cfg.EOSTokenID = vocab.EOT, vocab.EOT
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("toy: %w", err)
	}
	return cfg, nil
}

// InitParams draws fresh parameters the way GPT-2 initialises them, but
// with a standard deviation of 1/√fan_in for the matrices instead of GPT-2's
// fixed 0.02 (≈ 1/√768, tuned for GPT-2 small's width): at d_model 64, 0.02
// leaves the MLP pre-activations so small that GELU is nearly linear and
// training sits for thousands of steps at chance before it can form any
// AND of two names. As in GPT-2, projections that write to the residual
// stream are further scaled by 1/√(2·layers), wte and wpe are N(0, 0.02²),
// biases are 0 and LayerNorm gains 1.
func InitParams(cfg *weights.Config, seed uint64) []weights.Tensor {
	rng := rand.New(rand.NewPCG(seed, 0x696e6974)) // "init"
	resid := 1 / math.Sqrt(2*float64(cfg.NLayer))
	var out []weights.Tensor
	for _, spec := range cfg.ParamSpecs() {
		n := 1
		for _, d := range spec.Shape {
			n *= d
		}
		data := make([]float32, n)
		var std float64
		switch {
		case strings.Contains(spec.Name, "ln_") && strings.HasSuffix(spec.Name, ".weight"):
			for i := range data {
				data[i] = 1
			}
		case strings.HasSuffix(spec.Name, ".bias"):
		case spec.Name == "wte.weight":
			// Tied to the unembedding: 1/√d_model gives logits of unit scale.
			std = 1 / math.Sqrt(float64(cfg.NEmbd))
		case spec.Name == "wpe.weight":
			std = 0.02
		default: // Conv1D [in, out]
			std = 1 / math.Sqrt(float64(spec.Shape[0]))
			if strings.HasSuffix(spec.Name, "c_proj.weight") {
				std *= resid
			}
		}
		if std > 0 {
			for i := range data {
				data[i] = float32(rng.NormFloat64() * std)
			}
		}
		out = append(out, weights.Tensor{Name: spec.Name, Shape: spec.Shape, Data: data})
	}
	return out
}

// Folder is a toy model as stored: a GPT-2 checkpoint folder (loadable with
// --model DIR by every factlens command) plus the world it was trained on
// and how far training got.
type Folder struct {
	Dir       string
	World     *World
	State     *TrainState
	Model     *gpt2.Model
	Tokenizer *gpt2.Tokenizer
	ck        *weights.Checkpoint
}

// Close releases the checkpoint's mapping; the Model is unusable afterwards.
func (f *Folder) Close() error { return f.ck.Close() }

// Open opens a toy model folder: its checkpoint (weights.OpenCheckpoint,
// which is what --model DIR resolves to for a folder) with raw weights, its
// tokenizer, world and training state.
func Open(dir string) (*Folder, error) {
	ck, err := weights.OpenCheckpoint(dir)
	if err != nil {
		return nil, err
	}
	f, err := openWith(dir, ck)
	if err != nil {
		ck.Close()
		return nil, err
	}
	return f, nil
}

func openWith(dir string, ck *weights.Checkpoint) (*Folder, error) {
	m, err := gpt2.FromCheckpoint(ck, gpt2.Processing{})
	if err != nil {
		return nil, err
	}
	tok, err := gpt2.LoadTokenizer(dir)
	if err != nil {
		return nil, err
	}
	w, err := ReadWorld(filepath.Join(dir, WorldFile))
	if err != nil {
		return nil, err
	}
	st, err := readTrainState(filepath.Join(dir, TrainingFile))
	if err != nil {
		return nil, err
	}
	return &Folder{Dir: dir, World: w, State: st, Model: m, Tokenizer: tok, ck: ck}, nil
}

// IsToyModel reports whether dir looks like a toy model folder.
func IsToyModel(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, WorldFile))
	return err == nil
}

// writeFolder writes everything but the optimizer state: the checkpoint,
// tokenizer, world, facts and training state. The weights go last, so a
// folder interrupted while saving still holds the previous consistent
// weights with at worst newer metadata.
func writeFolder(dir string, cfg *weights.Config, params []weights.Tensor, vocab *Vocabulary, w *World, st *TrainState) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("toy: %w", err)
	}
	if err := vocab.WriteFiles(dir); err != nil {
		return err
	}
	wb, err := json.MarshalIndent(w, "", " ")
	if err != nil {
		return fmt.Errorf("toy: %w", err)
	}
	if err := weights.WriteFileBytesAtomic(filepath.Join(dir, WorldFile), append(wb, '\n')); err != nil {
		return err
	}
	var facts strings.Builder
	for _, f := range w.AnalysisFacts() {
		b, err := json.Marshal(f)
		if err != nil {
			return fmt.Errorf("toy: %w", err)
		}
		facts.Write(b)
		facts.WriteByte('\n')
	}
	if err := weights.WriteFileBytesAtomic(filepath.Join(dir, FactsFile), []byte(facts.String())); err != nil {
		return err
	}
	sb, err := json.MarshalIndent(st, "", " ")
	if err != nil {
		return fmt.Errorf("toy: %w", err)
	}
	if err := weights.WriteFileBytesAtomic(filepath.Join(dir, TrainingFile), append(sb, '\n')); err != nil {
		return err
	}
	return weights.SaveCheckpoint(dir, cfg, params, weights.SaveOptions{})
}

func readTrainState(path string) (*TrainState, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("toy: %s is missing: not a toy model folder", path)
	}
	if err != nil {
		return nil, fmt.Errorf("toy: %w", err)
	}
	var st TrainState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("toy: %s: %w", path, err)
	}
	return &st, nil
}
