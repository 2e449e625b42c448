package sae

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/factlens/factlens/weights"
)

// A checkpoint is a folder <CheckpointDir>/step_<n>/ holding the SAE as an
// SAELens folder (raw weights; normalize_activations expected_average_only_in
// with activation_scaler.json when the inputs are scaled, as SAELens'
// checkpoints do) plus trainer_state.safetensors with Adam's moments, the
// dead-latent counters and a JSON header with everything else. It is built
// under a temporary name and renamed into place, and only then does the file
// <CheckpointDir>/latest (itself replaced atomically) name it. A run killed or
// cancelled at any moment therefore leaves the previous checkpoint intact.
const (
	latestFile       = "latest"
	trainerStateFile = "trainer_state.safetensors"
	checkpointPrefix = "step_"
)

// trainerState is the JSON header of trainer_state.safetensors.
type trainerState struct {
	Step        int         `json:"step"`
	Tokens      int64       `json:"tokens"`
	AdamStep    int         `json:"adam_step"`
	NormFactor  float64     `json:"norm_factor"`
	WindowSteps int         `json:"window_steps"`
	WindowRows  int64       `json:"window_rows"`
	Config      TrainConfig `json:"config"`
	SourceState []byte      `json:"source_state,omitempty"`
	History     []StepStats `json:"history,omitempty"`
}

func (t *Trainer) saveCheckpoint(src Source) error {
	c := t.cfg
	if err := os.MkdirAll(c.CheckpointDir, 0o755); err != nil {
		return fmt.Errorf("sae: checkpoint: %w", err)
	}
	name := fmt.Sprintf("%s%09d", checkpointPrefix, t.step)
	final := filepath.Join(c.CheckpointDir, name)
	tmp, err := os.MkdirTemp(c.CheckpointDir, ".tmp-"+name+"-")
	if err != nil {
		return fmt.Errorf("sae: checkpoint: %w", err)
	}
	defer os.RemoveAll(tmp) // a no-op once renamed

	raw := &SAE{Config: t.sae.Config, WEnc: t.sae.WEnc, BEnc: t.sae.BEnc, WDec: t.sae.WDec, BDec: t.sae.BDec}
	if t.normFactor != 0 && t.normFactor != 1 {
		raw.Config.Normalization = NormExpectedAverageOnlyIn
		raw.Config.NormScalingFactor = t.normFactor
	}
	if d := t.densities(); d != nil {
		raw.LogSparsity = make([]float32, len(d))
		for j, v := range d {
			raw.LogSparsity[j] = float32(math.Log10(float64(v) + 1e-10))
		}
	}
	if err := raw.Save(tmp); err != nil {
		return err
	}

	st := trainerState{
		Step: t.step, Tokens: t.tokens, AdamStep: t.opt.Step, NormFactor: t.normFactor,
		WindowSteps: t.windowSteps, WindowRows: t.windowRows, Config: c, History: t.History,
	}
	if ss, ok := src.(StatefulSource); ok {
		if st.SourceState, err = ss.MarshalState(); err != nil {
			return fmt.Errorf("sae: checkpoint: source state: %w", err)
		}
	}
	header, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("sae: checkpoint: %w", err)
	}
	dIn, dSAE := c.DIn, c.DSAE
	shapes := [][]int{{dIn, dSAE}, {dSAE}, {dSAE, dIn}, {dIn}}
	names := []string{"W_enc", "b_enc", "W_dec", "b_dec"}
	var tensors []weights.Tensor
	for i, n := range names {
		tensors = append(tensors,
			weights.Tensor{Name: "adam_m." + n, Shape: shapes[i], Data: t.opt.M[i]},
			weights.Tensor{Name: "adam_v." + n, Shape: shapes[i], Data: t.opt.V[i]})
	}
	since := make([]float32, dSAE)
	for j, v := range t.sinceFired {
		since[j] = float32(v)
	}
	tensors = append(tensors,
		weights.Tensor{Name: "since_fired", Shape: []int{dSAE}, Data: since},
		weights.Tensor{Name: "act_count", Shape: []int{dSAE}, Data: t.actCount})
	if t.lastDensity != nil {
		tensors = append(tensors, weights.Tensor{Name: "last_density", Shape: []int{dSAE}, Data: t.lastDensity})
	}
	if err := weights.WriteSafetensors(filepath.Join(tmp, trainerStateFile), tensors,
		map[string]string{"trainer": string(header)}); err != nil {
		return fmt.Errorf("sae: checkpoint: %w", err)
	}
	if err := syncDir(tmp); err != nil {
		return err
	}
	if err := os.RemoveAll(final); err != nil {
		return fmt.Errorf("sae: checkpoint: %w", err)
	}
	if err := os.Rename(tmp, final); err != nil {
		return fmt.Errorf("sae: checkpoint: %w", err)
	}
	if err := syncDir(c.CheckpointDir); err != nil {
		return err
	}
	if err := weights.WriteFileBytesAtomic(filepath.Join(c.CheckpointDir, latestFile), []byte(name+"\n")); err != nil {
		return err
	}
	return t.pruneCheckpoints(name)
}

// pruneCheckpoints removes all but the newest KeepCheckpoints checkpoints
// (never the one named current) and leftover temporary folders.
func (t *Trainer) pruneCheckpoints(current string) error {
	dir := t.cfg.CheckpointDir
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("sae: checkpoint: %w", err)
	}
	var steps []string
	for _, e := range entries {
		switch {
		case strings.HasPrefix(e.Name(), ".tmp-"+checkpointPrefix):
			os.RemoveAll(filepath.Join(dir, e.Name()))
		case e.IsDir() && strings.HasPrefix(e.Name(), checkpointPrefix):
			steps = append(steps, e.Name())
		}
	}
	sort.Strings(steps) // zero-padded, so lexical order is step order
	keep := max(t.cfg.KeepCheckpoints, 1)
	for i := 0; i < len(steps)-keep; i++ {
		if steps[i] != current {
			if err := os.RemoveAll(filepath.Join(dir, steps[i])); err != nil {
				return fmt.Errorf("sae: checkpoint: %w", err)
			}
		}
	}
	return nil
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sae: checkpoint: %w", err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil && !errors.Is(err, os.ErrInvalid) {
		return fmt.Errorf("sae: checkpoint: sync %s: %w", dir, err)
	}
	return nil
}

// LatestCheckpoint returns the folder of the newest complete checkpoint in
// dir (the one the latest file names).
func LatestCheckpoint(dir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, latestFile))
	if err != nil {
		return "", fmt.Errorf("sae: no checkpoint in %s: %w", dir, err)
	}
	name := strings.TrimSpace(string(b))
	if !strings.HasPrefix(name, checkpointPrefix) || strings.ContainsAny(name, `/\`) {
		return "", fmt.Errorf("sae: %s names %q, not a checkpoint folder", filepath.Join(dir, latestFile), name)
	}
	return filepath.Join(dir, name), nil
}

// ResumeOptions change a resumed run.
type ResumeOptions struct {
	Log   io.Writer // where to log (the checkpoint cannot hold one)
	Steps int       // a new total number of steps; 0 keeps the checkpoint's
}

// ResumeTrainer restores the trainer from the newest checkpoint in dir (a
// TrainConfig.CheckpointDir). Run then continues where the checkpoint left
// off; a StatefulSource passed to Run is moved to the recorded position.
func ResumeTrainer(dir string, opts ResumeOptions) (*Trainer, error) {
	ck, err := LatestCheckpoint(dir)
	if err != nil {
		return nil, err
	}
	f, err := weights.OpenSafetensors(filepath.Join(ck, trainerStateFile))
	if err != nil {
		return nil, fmt.Errorf("sae: resume: %w", err)
	}
	defer f.Close()
	var st trainerState
	if err := json.Unmarshal([]byte(f.Metadata()["trainer"]), &st); err != nil {
		return nil, fmt.Errorf("sae: resume: %s: trainer header: %w", ck, err)
	}
	cfg := st.Config
	cfg.CheckpointDir = dir
	cfg.Log = opts.Log
	if opts.Steps > 0 {
		cfg.Steps = opts.Steps
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("sae: resume: %w", err)
	}
	s, err := Load(ck)
	if err != nil {
		return nil, fmt.Errorf("sae: resume: %w", err)
	}
	// Load folded the normalization factor; training continues on the raw
	// weights, so read them again unfolded.
	s.Config.Normalization = NormNone
	if err := s.readWeights(filepath.Join(ck, WeightsFile)); err != nil {
		return nil, err
	}
	s.Config.Metadata, s.Config.RequiresProcessing = cfg.Metadata, cfg.RequiresProcessing
	t := &Trainer{cfg: cfg, sae: s}
	t.initState()
	t.step, t.tokens, t.normFactor = st.Step, st.Tokens, st.NormFactor
	t.windowSteps, t.windowRows, t.History = st.WindowSteps, st.WindowRows, st.History
	t.opt.Step = st.AdamStep
	read := func(name string, dst []float32) error {
		v, err := f.Float32(name)
		if err != nil {
			return fmt.Errorf("sae: resume: %w", err)
		}
		if len(v) != len(dst) {
			return fmt.Errorf("sae: resume: %s: %s has %d values, want %d", ck, name, len(v), len(dst))
		}
		copy(dst, v)
		return nil
	}
	for i, n := range []string{"W_enc", "b_enc", "W_dec", "b_dec"} {
		if err := errors.Join(read("adam_m."+n, t.opt.M[i]), read("adam_v."+n, t.opt.V[i])); err != nil {
			return nil, err
		}
	}
	since := make([]float32, cfg.DSAE)
	if err := errors.Join(read("since_fired", since), read("act_count", t.actCount)); err != nil {
		return nil, err
	}
	for j, v := range since {
		t.sinceFired[j] = int32(v)
	}
	if _, ok := f.Info("last_density"); ok {
		t.lastDensity = make([]float32, cfg.DSAE)
		if err := read("last_density", t.lastDensity); err != nil {
			return nil, err
		}
	}
	t.pendingSourceState = st.SourceState
	return t, nil
}
