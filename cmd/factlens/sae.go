package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/factlens/factlens/cmd/factlens/report"
	"github.com/factlens/factlens/gpt2"
	"github.com/factlens/factlens/sae"
)

func (a *app) saeCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "sae",
		Short: "Train, evaluate and read sparse autoencoders (SAELens format) over GPT-2 activations",
		Long: `sae trains sparse autoencoders on activations harvested from any hook point of a GPT-2
model run over a text corpus, evaluates them with SAELens' metrics (L0, explained variance,
CE-loss and KL scores against zero-ablation, feature densities), and lists the features a text
activates. SAE folders are SAELens' (cfg.json + sae_weights.safetensors): folders trained here
load in SAELens, and SAELens releases on the Hugging Face Hub load here.`,
	}
	cmd.AddCommand(a.saeTrainCommand(), a.saeEvalCommand(), a.saeFeaturesCommand())
	return cmd
}

// ---------------------------------------------------------------------------
// sae train

// saeTrainFlags are the settings of `sae train`.
type saeTrainFlags struct {
	rf              runFlags
	hook            string
	corpus          []string
	out             string
	arch            string
	k               int
	l1              float64
	l1WarmUp        int
	auxK            float64
	expansion       int
	dSAE            int
	tokens          int64
	batch           int
	context         int
	excludeBOS      bool
	lr              float64
	warmUp, decay   int
	normalize       string
	normBatches     int
	deadWindow      int
	seed            uint64
	checkpointEvery int
	logEvery        int
	resume          bool
	buffer          int
	harvestBatch    int
	format, report  string
}

// fixedOnResume are the flags a checkpoint fixes: the trainer's own
// configuration comes back from it.
var fixedOnResume = []string{"arch", "k", "l1", "l1-warmup", "aux-k", "expansion", "d-sae", "batch", "lr",
	"warmup", "decay", "normalize", "norm-batches", "dead-window", "checkpoint-every", "log-every"}

// saeSourceSettings is where the activations of a training run come from;
// `sae train` writes it beside the checkpoints so that --resume rebuilds the
// same activation store.
type saeSourceSettings struct {
	Model       string         `json:"model"`
	Revision    string         `json:"revision,omitempty"`
	Processing  map[string]any `json:"model_from_pretrained_kwargs"`
	Hook        string         `json:"hook_name"`
	Corpus      []string       `json:"corpus"`
	ContextSize int            `json:"context_size"`
	PrependBOS  bool           `json:"prepend_bos"`
	ExcludeBOS  bool           `json:"exclude_bos"`
	Seed        uint64         `json:"seed"`
	BatchSize   int            `json:"batch_size"`
}

const sourceSettingsFile = "activation_source.json"

// saeTrainResult is what `sae train --format json` prints (and what
// training.json in the output folder holds).
type saeTrainResult struct {
	Model      string   `json:"model"`
	Commit     string   `json:"commit,omitempty"`
	Processing string   `json:"processing"`
	PrependBOS bool     `json:"prepend_bos"`
	ExcludeBOS bool     `json:"exclude_bos"`
	Hook       string   `json:"hook_name"`
	Corpus     []string `json:"corpus"`
	Context    int      `json:"context_size"`
	Seed       uint64   `json:"seed"`

	Folder     string `json:"folder"`
	Checkpoint string `json:"checkpoint"`

	Architecture      string  `json:"architecture"`
	DIn               int     `json:"d_in"`
	DSAE              int     `json:"d_sae"`
	K                 int     `json:"k,omitempty"`
	L1Coefficient     float64 `json:"l1_coefficient,omitempty"`
	AuxKCoefficient   float64 `json:"aux_k_coefficient,omitempty"`
	LR                float64 `json:"lr"`
	LRWarmUpSteps     int     `json:"lr_warm_up_steps"`
	LRDecaySteps      int     `json:"lr_decay_steps"`
	BatchSize         int     `json:"batch_size"`
	Steps             int     `json:"steps"`
	TrainingTokens    int64   `json:"training_tokens"`
	Normalize         string  `json:"normalize_activations"`
	NormScalingFactor float64 `json:"norm_scaling_factor"`
	DeadFeatureWindow int     `json:"dead_feature_window"`
	ResumedFromStep   int     `json:"resumed_from_step,omitempty"`

	// Throughput of this invocation: harvesting is the model's forward
	// passes filling the activation buffer, training the SAE's steps.
	WallSeconds          float64 `json:"wall_seconds"`
	HarvestSeconds       float64 `json:"harvest_seconds"`
	HarvestedTokens      int64   `json:"harvested_tokens"`
	HarvestTokensPerSec  float64 `json:"harvest_tokens_per_second"`
	TrainSeconds         float64 `json:"train_seconds"`
	TrainedTokens        int64   `json:"trained_tokens"`
	TrainTokensPerSecond float64 `json:"train_tokens_per_second"`

	Final   *trainStep  `json:"final,omitempty"`
	History []trainStep `json:"history"`

	// Feature densities over the trainer's last sampling window.
	DensityWindowTokens int64 `json:"density_window_tokens"`
	NeverFired          int   `json:"never_fired_in_window"`
	DensityBelow1e5     int   `json:"below_1e-5"`
	DensityBelow1e6     int   `json:"below_1e-6"`

	DecoderNorms    normSummary `json:"decoder_norms"`
	DecoderHandling string      `json:"decoder_norm_handling"`
}

type trainStep struct {
	Step              int     `json:"step"`
	Tokens            int64   `json:"tokens"`
	Loss              float64 `json:"loss"`
	MSE               float64 `json:"mse"`
	L1                float64 `json:"l1"`
	Aux               float64 `json:"aux"`
	L0                float64 `json:"l0"`
	ExplainedVariance float64 `json:"explained_variance"`
	Dead              int     `json:"dead"`
	LR                float64 `json:"lr"`
	TokensPerSecond   float64 `json:"tokens_per_second"`
}

type normSummary struct {
	Min  float64 `json:"min"`
	Mean float64 `json:"mean"`
	Max  float64 `json:"max"`
}

func (a *app) saeTrainCommand() *cobra.Command {
	var f saeTrainFlags
	cmd := &cobra.Command{
		Use:   "train --hook HOOK --corpus FILE[,FILE] --out DIR",
		Short: "Train an SAE on activations at one hook point over a text corpus",
		Long: `train runs the model over the corpus (plain text, JSON Lines or Parquet with a "text" field,
local or a Hugging Face dataset file hf://datasets/ORG/NAME[@REVISION]/PATH fetched into the Hub cache),
harvests the activations at --hook through a shuffling buffer as SAELens' ActivationsStore does,
and trains a TopK or standard (ReLU + L1) SAE on them with Adam. The result is an SAELens folder
in --out (cfg.json, sae_weights.safetensors, sparsity.safetensors) with the model, hook, corpus
and weight processing in its metadata, plus training.json with the training statistics.

Checkpoints go to --out/checkpoints every --checkpoint-every steps. Ctrl-C stops between steps
and leaves the last checkpoint intact; --resume continues from it (the checkpoint fixes the
trainer's settings, and the activation source is rebuilt as it was; --tokens may raise the
budget).`,
		Example: "  factlens sae train --model gpt2 --hook blocks.6.hook_resid_pre --corpus owt.jsonl --out sae-l6 --k 32 --tokens 50000000\n" +
			"  factlens sae train --model gpt2 --out sae-l6 --resume --tokens 100000000",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.runSAETrain(cmd, &f)
		},
	}
	f.rf.register(cmd)
	fl := cmd.Flags()
	fl.StringVar(&f.hook, "hook", "", "hook point to read (required), e.g. blocks.6.hook_resid_pre")
	fl.StringSliceVar(&f.corpus, "corpus", nil, "corpus files: plain text, .jsonl or .parquet with a \"text\" field, or hf://datasets/ORG/NAME[@REV]/FILE (required)")
	fl.StringVarP(&f.out, "out", "o", "", "output folder for the SAE and its checkpoints (required)")
	fl.StringVar(&f.arch, "arch", "topk", "architecture: topk or standard (ReLU + decoder-norm-weighted L1)")
	fl.IntVar(&f.k, "k", 32, "topk: latents kept per token")
	fl.Float64Var(&f.l1, "l1", 1, "standard: L1 coefficient (SAELens l1_coefficient)")
	fl.IntVar(&f.l1WarmUp, "l1-warmup", 0, "standard: steps of linear L1 warm-up")
	fl.Float64Var(&f.auxK, "aux-k", 1, "topk: aux-k loss coefficient for dead latents (0 turns it off)")
	fl.IntVar(&f.expansion, "expansion", 8, "d_sae = expansion × d_in")
	fl.IntVar(&f.dSAE, "d-sae", 0, "number of latents (instead of --expansion)")
	fl.Int64Var(&f.tokens, "tokens", 2_000_000, "training tokens (steps = tokens / batch, rounded up)")
	fl.IntVar(&f.batch, "batch", 4096, "activation rows per training step")
	fl.IntVar(&f.context, "context", 128, "tokens per window, BOS included (SAELens context_size)")
	fl.BoolVar(&f.excludeBOS, "exclude-bos", false, "with --prepend-bos, do not train on the BOS position (its residual is an outlier)")
	fl.Float64Var(&f.lr, "lr", 3e-4, "Adam learning rate")
	fl.IntVar(&f.warmUp, "warmup", 0, "steps of linear learning-rate warm-up")
	fl.IntVar(&f.decay, "decay", 0, "steps of linear learning-rate decay to 0 at the end")
	fl.StringVar(&f.normalize, "normalize", sae.NormExpectedAverageOnlyIn,
		"input scaling: expected_average_only_in (scale to mean norm √d_in, folded into the saved weights) or none")
	fl.IntVar(&f.normBatches, "norm-batches", 10, "batches used to estimate the expected_average_only_in factor (SAELens uses 1000)")
	fl.IntVar(&f.deadWindow, "dead-window", 1000, "steps without firing after which a latent counts as dead")
	fl.Uint64Var(&f.seed, "seed", 1, "seed of the weight initialization and the activation shuffling")
	fl.IntVar(&f.checkpointEvery, "checkpoint-every", 0, "steps between checkpoints (0: a tenth of the run, at most 1000)")
	fl.IntVar(&f.logEvery, "log-every", 0, "steps between training-curve points (0: about 100 points)")
	fl.BoolVar(&f.resume, "resume", false, "continue from the last checkpoint in --out/checkpoints")
	fl.IntVar(&f.buffer, "buffer", 32768, "rows in the activation shuffling buffer")
	fl.IntVar(&f.harvestBatch, "harvest-batch", 8, "windows per model forward pass while harvesting")
	fl.StringVarP(&f.format, "format", "f", "text", "report format: text, json, md or html")
	fl.StringVar(&f.report, "report", "", "write the report to this file instead of standard output")
	fl.Lookup("prepend-bos").Usage = "put <|endoftext|> before each corpus window (SAELens' prepend_bos; recorded in cfg.json)"
	return cmd
}

func (a *app) runSAETrain(cmd *cobra.Command, f *saeTrainFlags) error {
	ctx := cmd.Context()
	if err := checkFormat(f.format, "text", "json", "md", "html"); err != nil {
		return err
	}
	if f.out == "" {
		return usagef("--out DIR is required: the folder that receives the SAE")
	}
	if f.buffer < 1 || f.harvestBatch < 1 {
		return usagef("--buffer and --harvest-batch must be positive")
	}
	ckDir := filepath.Join(f.out, "checkpoints")
	var src saeSourceSettings
	var proc gpt2.Processing
	if f.resume {
		for _, name := range fixedOnResume {
			if cmd.Flags().Changed(name) {
				return usagef("--%s cannot change when resuming: the checkpoint fixes the trainer's settings", name)
			}
		}
		prev, err := readSourceSettings(ckDir)
		if err != nil {
			return err
		}
		if src, proc, err = f.resumeSettings(cmd, prev); err != nil {
			return err
		}
	} else {
		if err := f.validate(cmd); err != nil {
			return err
		}
		if _, err := sae.LatestCheckpoint(ckDir); err == nil {
			return usagef("%s holds a checkpoint of an earlier run: pass --resume to continue it, or choose another --out", ckDir)
		}
		var err error
		if proc, err = f.rf.parseProcessing(); err != nil {
			return err
		}
		src = saeSourceSettings{Model: f.rf.model, Revision: f.rf.revision, Processing: sae.ProcessingOf(proc).Kwargs(),
			Hook: f.hook, Corpus: f.corpus, ContextSize: f.context, PrependBOS: f.rf.prependBOS, ExcludeBOS: f.excludeBOS,
			Seed: f.seed, BatchSize: f.batch}
	}

	rf := f.rf
	rf.model, rf.revision, rf.prependBOS = src.Model, src.Revision, src.PrependBOS
	lm, err := a.loadModelProcessed(ctx, &rf, proc)
	if err != nil {
		return err
	}
	defer lm.Close()
	if err := lm.model.CheckHookName(src.Hook); err != nil {
		return err
	}
	if src.ContextSize > lm.model.NCtx() {
		return usagef("--context %d exceeds the model's %d positions", src.ContextSize, lm.model.NCtx())
	}
	// Tokenizing the first window fails fast on a missing or empty corpus,
	// before any model runs.
	hub := a.hub()
	if _, err := sae.CorpusWindows(ctx, lm.tok, sae.StoreConfig{Files: src.Corpus, Hub: hub,
		ContextSize: src.ContextSize, PrependBOS: src.PrependBOS}, 1); err != nil {
		return fmt.Errorf("--corpus: %w", err)
	}
	store, err := sae.NewModelSource(lm.model, lm.tok, sae.StoreConfig{
		Hook: src.Hook, Files: src.Corpus, Hub: hub, ContextSize: src.ContextSize, PrependBOS: src.PrependBOS,
		ExcludeBOS: src.ExcludeBOS, ModelBatch: f.harvestBatch, BufferRows: f.buffer, Seed: src.Seed,
	})
	if err != nil {
		return err
	}

	var logw io.Writer
	if a.verbose && !a.quiet {
		logw = a.stderr
	}
	var t *sae.Trainer
	normBatches := 0
	if f.resume {
		opts := sae.ResumeOptions{Log: logw}
		if cmd.Flags().Changed("tokens") {
			opts.Steps = stepsFor(f.tokens, src.BatchSize)
		}
		if t, err = sae.ResumeTrainer(ckDir, opts); err != nil {
			return err
		}
		c := t.Config()
		if opts.Steps > 0 && opts.Steps <= t.Step() {
			return usagef("--tokens %d is not beyond the checkpoint's %d tokens (step %d)", f.tokens, int64(t.Step())*int64(c.BatchSize), t.Step())
		}
		if c.DIn != store.DIn() {
			return fmt.Errorf("the checkpoint's SAE has d_in %d but %s gives %d values per token", c.DIn, src.Hook, store.DIn())
		}
	} else {
		cfg := f.trainConfig(store.DIn())
		cfg.CheckpointDir = ckDir
		cfg.Log = logw
		cfg.Metadata, cfg.RequiresProcessing = store.TrainMetadata()
		if err := cfg.Validate(); err != nil {
			return usagef("%v", err)
		}
		if t, err = sae.NewTrainer(cfg); err != nil {
			return err
		}
		if err := os.MkdirAll(ckDir, 0o755); err != nil {
			return err
		}
		if err := writeJSONFile(filepath.Join(ckDir, sourceSettingsFile), src); err != nil {
			return err
		}
		if cfg.NormalizeActivations == sae.NormExpectedAverageOnlyIn {
			normBatches = cfg.NormEstimateBatches
		}
	}
	c := t.Config()
	startStep := t.Step()
	timed := &timedSource{src: store, bar: a.newBar(c.Steps-startStep+normBatches, "sae train")}
	timed.startWindows = timed.windows()

	start := time.Now()
	s, err := t.Run(ctx, timed)
	if timed.bar != nil {
		_ = timed.bar.Finish()
	}
	if err != nil {
		if ctx.Err() != nil && !a.quiet {
			if ck, cerr := sae.LatestCheckpoint(ckDir); cerr == nil {
				fmt.Fprintf(a.stderr, "factlens: training stopped at step %d; checkpoint %s is intact; continue with --out %s --resume\n", t.Step(), ck, f.out)
			}
		}
		return err
	}
	wall := time.Since(start)
	if err := s.Save(f.out); err != nil {
		return err
	}
	a.timing("train", start)

	res := trainResult(lm, src, t, s, f.out, ckDir)
	res.ResumedFromStep = startStep
	res.WallSeconds = wall.Seconds()
	res.HarvestSeconds = timed.wait.Seconds()
	res.HarvestedTokens = (timed.windows() - timed.startWindows) * int64(rowsPerWindow(src))
	res.TrainedTokens = int64(t.Step()-startStep) * int64(c.BatchSize)
	res.TrainSeconds = (wall - timed.wait).Seconds()
	if res.HarvestSeconds > 0 {
		res.HarvestTokensPerSec = float64(res.HarvestedTokens) / res.HarvestSeconds
	}
	if res.TrainSeconds > 0 {
		res.TrainTokensPerSecond = float64(res.TrainedTokens) / res.TrainSeconds
	}
	if err := writeJSONFile(filepath.Join(f.out, "training.json"), res); err != nil {
		return err
	}
	if !a.quiet {
		fmt.Fprintf(a.stderr, "factlens: wrote the SAE to %s (checkpoints in %s)\n", f.out, ckDir)
	}
	return writeOutput(a.stdout, f.report, func(w io.Writer) error {
		return renderResult(w, f.format, res, func() *report.Document { return trainDocument(res, lm.provenance(), f.format) })
	})
}

// writeJSONFile writes v as indented JSON, atomically.
func writeJSONFile(path string, v any) error {
	return writeOutput(nil, path, func(w io.Writer) error {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if err := enc.Encode(v); err != nil {
			return fmt.Errorf("writing %s: %w", path, err)
		}
		return nil
	})
}

func (f *saeTrainFlags) validate(cmd *cobra.Command) error {
	switch {
	case f.hook == "":
		return usagef("--hook is required, e.g. --hook blocks.6.hook_resid_pre")
	case len(f.corpus) == 0:
		return usagef("--corpus FILE[,FILE] is required: plain text, .jsonl or .parquet with a \"text\" field, or hf://datasets/ORG/NAME[@REV]/FILE")
	case f.arch != string(sae.TopK) && f.arch != string(sae.Standard):
		return usagef("unknown --arch %q (want topk or standard)", f.arch)
	case f.normalize != sae.NormExpectedAverageOnlyIn && f.normalize != sae.NormNone:
		return usagef("unknown --normalize %q (want %s or %s)", f.normalize, sae.NormExpectedAverageOnlyIn, sae.NormNone)
	case cmd.Flags().Changed("expansion") && cmd.Flags().Changed("d-sae"):
		return usagef("give --expansion or --d-sae, not both")
	case f.expansion < 1 || f.dSAE < 0:
		return usagef("--expansion must be at least 1 and --d-sae positive")
	case f.tokens < 1 || f.batch < 1:
		return usagef("--tokens and --batch must be positive")
	case f.context < 1 || (f.rf.prependBOS && f.context < 2):
		return usagef("--context %d is too small", f.context)
	case f.normBatches < 1:
		return usagef("--norm-batches must be positive")
	case f.excludeBOS && !f.rf.prependBOS:
		return usagef("--exclude-bos needs --prepend-bos")
	}
	return nil
}

// resumeSettings takes the activation source of the checkpointed run; flags
// given explicitly must agree with it.
func (f *saeTrainFlags) resumeSettings(cmd *cobra.Command, prev saeSourceSettings) (saeSourceSettings, gpt2.Processing, error) {
	proc := sae.ProcessingFromKwargs(prev.Processing).GPT2()
	changed := cmd.Flags().Changed
	conflict := func(flag string, given, was any) error {
		return usagef("--%s %v differs from the checkpointed run's %v; resume with the same settings (or leave the flag out)", flag, given, was)
	}
	if changed("model") && f.rf.model != prev.Model {
		return prev, proc, conflict("model", f.rf.model, prev.Model)
	}
	if changed("revision") && f.rf.revision != prev.Revision {
		return prev, proc, conflict("revision", f.rf.revision, prev.Revision)
	}
	if changed("processing") {
		p, err := f.rf.parseProcessing()
		if err != nil {
			return prev, proc, err
		}
		if p != proc {
			return prev, proc, conflict("processing", p, proc)
		}
	}
	if changed("hook") && f.hook != prev.Hook {
		return prev, proc, conflict("hook", f.hook, prev.Hook)
	}
	if changed("corpus") && !slices.Equal(f.corpus, prev.Corpus) {
		return prev, proc, conflict("corpus", strings.Join(f.corpus, ","), strings.Join(prev.Corpus, ","))
	}
	if changed("context") && f.context != prev.ContextSize {
		return prev, proc, conflict("context", f.context, prev.ContextSize)
	}
	if changed("prepend-bos") && f.rf.prependBOS != prev.PrependBOS {
		return prev, proc, conflict("prepend-bos", f.rf.prependBOS, prev.PrependBOS)
	}
	if changed("exclude-bos") && f.excludeBOS != prev.ExcludeBOS {
		return prev, proc, conflict("exclude-bos", f.excludeBOS, prev.ExcludeBOS)
	}
	if changed("seed") && f.seed != prev.Seed {
		return prev, proc, conflict("seed", f.seed, prev.Seed)
	}
	if changed("tokens") && f.tokens < 1 {
		return prev, proc, usagef("--tokens must be positive")
	}
	return prev, proc, nil
}

func readSourceSettings(ckDir string) (saeSourceSettings, error) {
	var s saeSourceSettings
	if _, err := sae.LatestCheckpoint(ckDir); err != nil {
		return s, fmt.Errorf("--resume: %w", err)
	}
	b, err := os.ReadFile(filepath.Join(ckDir, sourceSettingsFile))
	if err != nil {
		return s, fmt.Errorf("--resume: %w", err)
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("--resume: %s: %w", filepath.Join(ckDir, sourceSettingsFile), err)
	}
	return s, nil
}

func stepsFor(tokens int64, batch int) int {
	return int((tokens + int64(batch) - 1) / int64(batch))
}

// trainConfig turns the flags into SAELens' defaults plus the choices made.
func (f *saeTrainFlags) trainConfig(dIn int) sae.TrainConfig {
	dSAE := f.dSAE
	if dSAE == 0 {
		dSAE = f.expansion * dIn
	}
	c := sae.DefaultTrainConfig(sae.Architecture(f.arch), dIn, dSAE, f.k)
	c.L1Coefficient, c.L1WarmUpSteps = f.l1, f.l1WarmUp
	c.AuxKCoefficient = f.auxK
	c.LR, c.LRWarmUpSteps, c.LRDecaySteps = f.lr, f.warmUp, f.decay
	c.BatchSize = f.batch
	c.Steps = stepsFor(f.tokens, f.batch)
	c.Seed = f.seed
	c.NormalizeActivations, c.NormEstimateBatches = f.normalize, f.normBatches
	c.DeadFeatureWindow = f.deadWindow
	c.CheckpointEvery = f.checkpointEvery
	if c.CheckpointEvery <= 0 {
		c.CheckpointEvery = min(max(c.Steps/10, 1), 1000)
	}
	c.LogEvery = f.logEvery
	if c.LogEvery <= 0 {
		c.LogEvery = max(c.Steps/100, 1)
	}
	return c
}

func rowsPerWindow(s saeSourceSettings) int {
	if s.PrependBOS && s.ExcludeBOS {
		return s.ContextSize - 1
	}
	return s.ContextSize
}

// timedSource measures the time the trainer waits for activations (the
// model's forward passes while harvesting) and ticks the progress bar once a
// batch. It passes the store's state through so checkpoints record it.
type timedSource struct {
	src          *sae.ModelSource
	bar          *progressbar.ProgressBar
	wait         time.Duration
	startWindows int64
}

func (s *timedSource) DIn() int { return s.src.DIn() }

func (s *timedSource) Next(ctx context.Context, dst []float32) error {
	start := time.Now()
	err := s.src.Next(ctx, dst)
	s.wait += time.Since(start)
	step(s.bar)
	return err
}

func (s *timedSource) MarshalState() ([]byte, error) { return s.src.MarshalState() }

func (s *timedSource) UnmarshalState(b []byte) error {
	err := s.src.UnmarshalState(b)
	s.startWindows = s.windows()
	return err
}

// windows is the number of corpus windows the store has run through the
// model (its documented checkpoint state).
func (s *timedSource) windows() int64 {
	b, err := s.src.MarshalState()
	if err != nil {
		return 0
	}
	var st struct {
		Windows int64 `json:"windows"`
	}
	if json.Unmarshal(b, &st) != nil {
		return 0
	}
	return st.Windows
}

func trainResult(lm *loadedModel, src saeSourceSettings, t *sae.Trainer, s *sae.SAE, out, ckDir string) *saeTrainResult {
	c := t.Config()
	res := &saeTrainResult{
		Model: lm.ck.Source.Ref, Commit: lm.ck.Source.Commit, Processing: lm.model.Processing.String(),
		PrependBOS: src.PrependBOS, ExcludeBOS: src.ExcludeBOS, Hook: src.Hook, Corpus: src.Corpus,
		Context: src.ContextSize, Seed: c.Seed, Folder: out,
		Architecture: string(c.Architecture), DIn: c.DIn, DSAE: c.DSAE,
		LR: c.LR, LRWarmUpSteps: c.LRWarmUpSteps, LRDecaySteps: c.LRDecaySteps,
		BatchSize: c.BatchSize, Steps: t.Step(), TrainingTokens: int64(t.Step()) * int64(c.BatchSize),
		Normalize: c.NormalizeActivations, NormScalingFactor: t.NormFactor(), DeadFeatureWindow: c.DeadFeatureWindow,
	}
	if ck, err := sae.LatestCheckpoint(ckDir); err == nil {
		res.Checkpoint = ck
	}
	if c.Architecture == sae.TopK {
		res.K, res.AuxKCoefficient = c.K, c.AuxKCoefficient
	} else {
		res.L1Coefficient = c.L1Coefficient
	}
	for _, h := range t.History {
		res.History = append(res.History, trainStep{Step: h.Step, Tokens: h.Tokens, Loss: h.Loss, MSE: h.MSE, L1: h.L1,
			Aux: h.Aux, L0: h.L0, ExplainedVariance: h.ExplainedVariance, Dead: h.Dead, LR: h.LR, TokensPerSecond: h.TokensPerSecond})
	}
	if n := len(res.History); n > 0 {
		last := res.History[n-1]
		res.Final = &last
	}
	// Result's densities are the current sampling window's, or the last
	// complete one's right after a window closes.
	w := c.FeatureSamplingWindow
	inWindow := t.Step() % w
	if inWindow == 0 {
		inWindow = min(w, t.Step())
	}
	res.DensityWindowTokens = int64(inWindow) * int64(c.BatchSize)
	for _, ls := range s.LogSparsity {
		d := math.Pow(10, float64(ls)) - 1e-10
		switch {
		case d <= 0 || ls <= -10+1e-6:
			res.NeverFired++
			res.DensityBelow1e5++
			res.DensityBelow1e6++
		case d < 1e-6:
			res.DensityBelow1e5++
			res.DensityBelow1e6++
		case d < 1e-5:
			res.DensityBelow1e5++
		}
	}
	res.DecoderNorms = decoderNorms(s)
	res.DecoderHandling = decoderHandling(c, t.NormFactor(), res.DecoderNorms)
	return res
}

func decoderNorms(s *sae.SAE) normSummary {
	d := s.Config.DIn
	ns := normSummary{Min: math.Inf(1), Max: math.Inf(-1)}
	for j := 0; j < s.Config.DSAE; j++ {
		var ss float64
		for _, v := range s.WDec[j*d : (j+1)*d] {
			ss += float64(v) * float64(v)
		}
		n := math.Sqrt(ss)
		ns.Min, ns.Max = math.Min(ns.Min, n), math.Max(ns.Max, n)
		ns.Mean += n / float64(s.Config.DSAE)
	}
	return ns
}

// decoderHandling says how decoder row norms were treated, which decides
// how feature activations compare across latents.
func decoderHandling(c sae.TrainConfig, f float64, ns normSummary) string {
	var b strings.Builder
	if c.Architecture == sae.TopK {
		b.WriteString("TopK: decoder rows are held at unit norm throughout training (each step removes the gradient's component along its row before Adam and renormalizes the row after it, as OpenAI's TopK SAEs do), so activations are comparable across latents.")
	} else {
		b.WriteString("Standard: decoder rows are not constrained; they start at norm 0.1 (SAELens decoder_init_norm) and the L1 penalty weighs each activation by its decoder row's norm (SAELens' standard SAE), so shrinking the decoder cannot evade it; compare latents by activation × row norm.")
	}
	if c.NormalizeActivations == sae.NormExpectedAverageOnlyIn && f != 1 && f != 0 {
		fmt.Fprintf(&b, " Inputs were scaled by expected_average_only_in's factor %.6g (√d_in / mean ‖x‖) during training; the factor is folded into the saved weights (W_enc·f, W_dec/f, b_dec/f; cfg normalize_activations none), so the saved SAE reads raw activations and its decoder rows, unit-norm in the training space, have norm 1/f = %.6g.", f, 1/f)
	}
	fmt.Fprintf(&b, " Saved decoder row norms: min %.4g, mean %.4g, max %.4g.", ns.Min, ns.Mean, ns.Max)
	return b.String()
}

func trainDocument(r *saeTrainResult, prov []report.Field, format string) *report.Document {
	prov = append(slices.Clone(prov),
		report.Field{Key: "hook", Value: r.Hook},
		report.Field{Key: "corpus", Value: strings.Join(r.Corpus, ", ")},
		report.Field{Key: "context", Value: fmt.Sprintf("%d tokens per window (exclude BOS: %v)", r.Context, r.ExcludeBOS)},
		report.Field{Key: "seed", Value: fmt.Sprint(r.Seed)},
		report.Field{Key: "SAE folder", Value: r.Folder},
		report.Field{Key: "checkpoint", Value: r.Checkpoint},
	)
	doc := &report.Document{Title: fmt.Sprintf("SAE training: %s, d_sae %d at %s", r.Architecture, r.DSAE, r.Hook), Provenance: prov}
	sparsity := fmt.Sprintf("k = %d, aux-k coefficient %g", r.K, r.AuxKCoefficient)
	if r.Architecture == string(sae.Standard) {
		sparsity = fmt.Sprintf("L1 coefficient %g", r.L1Coefficient)
	}
	run := &report.Table{Header: []string{"setting", "value"}, Rows: [][]string{
		{"architecture", r.Architecture},
		{"d_in × d_sae", fmt.Sprintf("%d × %d (expansion %.3g)", r.DIn, r.DSAE, float64(r.DSAE)/float64(r.DIn))},
		{"sparsity", sparsity},
		{"learning rate", fmt.Sprintf("%g (warm-up %d, decay %d steps)", r.LR, r.LRWarmUpSteps, r.LRDecaySteps)},
		{"batch", fmt.Sprintf("%d tokens", r.BatchSize)},
		{"steps", fmt.Sprintf("%d (%d tokens)", r.Steps, r.TrainingTokens)},
		{"normalization", fmt.Sprintf("%s (factor %.6g)", r.Normalize, r.NormScalingFactor)},
	}}
	if r.ResumedFromStep > 0 {
		run.Rows = append(run.Rows, []string{"resumed from", fmt.Sprintf("step %d", r.ResumedFromStep)})
	}
	doc.Blocks = append(doc.Blocks, &report.Heading{Level: 2, Text: "Run"}, run,
		&report.Paragraph{Text: "Decoder norms. " + r.DecoderHandling})

	doc.Blocks = append(doc.Blocks, &report.Heading{Level: 2, Text: "Throughput"},
		&report.Table{Header: []string{"phase", "tokens", "seconds", "tokens/s"}, NumericCols: []int{1, 2, 3}, Rows: [][]string{
			{"harvesting (model forward passes)", fmt.Sprint(r.HarvestedTokens), fmt.Sprintf("%.3g", r.HarvestSeconds), fmt.Sprintf("%.0f", r.HarvestTokensPerSec)},
			{"training (SAE steps)", fmt.Sprint(r.TrainedTokens), fmt.Sprintf("%.3g", r.TrainSeconds), fmt.Sprintf("%.0f", r.TrainTokensPerSecond)},
			{"whole run", fmt.Sprint(r.TrainedTokens), fmt.Sprintf("%.3g", r.WallSeconds), fmt.Sprintf("%.0f", float64(r.TrainedTokens)/math.Max(r.WallSeconds, 1e-9))},
		}})

	final := &report.Table{Header: []string{"metric", "value"}, NumericCols: []int{1}}
	if r.Final != nil {
		final.Caption = fmt.Sprintf("Last logged training batch (step %d)", r.Final.Step)
		final.Rows = append(final.Rows,
			[]string{"L0 (active latents per token)", fmt.Sprintf("%.2f", r.Final.L0)},
			[]string{"explained variance (batch)", fmt.Sprintf("%.4f", r.Final.ExplainedVariance)},
			[]string{"MSE (Σ over d_in, normalized space)", fmt.Sprintf("%.5g", r.Final.MSE)},
			[]string{"loss", fmt.Sprintf("%.5g", r.Final.Loss)},
			[]string{fmt.Sprintf("dead (no firing for %d steps)", r.DeadFeatureWindow), fmt.Sprint(r.Final.Dead)})
	}
	final.Rows = append(final.Rows,
		[]string{fmt.Sprintf("never fired in the last %d tokens", r.DensityWindowTokens), fmt.Sprint(r.NeverFired)},
		[]string{"density < 1e-5", fmt.Sprint(r.DensityBelow1e5)},
		[]string{"density < 1e-6", fmt.Sprint(r.DensityBelow1e6)})
	doc.Blocks = append(doc.Blocks, &report.Heading{Level: 2, Text: "Final statistics"}, final)

	if len(r.History) > 0 {
		doc.Blocks = append(doc.Blocks, &report.Heading{Level: 2, Text: "Training curves"})
		doc.Blocks = append(doc.Blocks, trainCurves(r, format)...)
	}
	doc.Blocks = append(doc.Blocks, &report.Paragraph{Text: fmt.Sprintf(
		"Evaluate with: factlens sae eval --model %s --sae %s --corpus %s", r.Model, r.Folder, strings.Join(r.Corpus, ","))})
	return doc
}

// trainCurves draws the logged steps in HTML and tabulates about ten of
// them elsewhere, where a hundred rows would bury the summary.
func trainCurves(r *saeTrainResult, format string) []report.Block {
	h := r.History
	x := make([]float64, len(h))
	series := func(get func(trainStep) float64) []float64 {
		y := make([]float64, len(h))
		for i, s := range h {
			y[i] = get(s)
		}
		return y
	}
	for i, s := range h {
		x[i] = float64(s.Step)
	}
	penalty := report.Series{Name: "aux-k", Y: series(func(s trainStep) float64 { return s.Aux })}
	if r.Architecture == string(sae.Standard) {
		penalty = report.Series{Name: "L1", Y: series(func(s trainStep) float64 { return s.L1 })}
	}
	if format == "html" {
		return []report.Block{
			&report.Lines{Caption: "Training loss per batch (normalized input space)", XLabel: "step", YLabel: "loss",
				X: x, Series: []report.Series{{Name: "total", Y: series(func(s trainStep) float64 { return s.Loss })},
					{Name: "MSE", Y: series(func(s trainStep) float64 { return s.MSE })}, penalty}},
			&report.Lines{Caption: "L0: active latents per token", XLabel: "step", YLabel: "L0",
				X: x, Series: []report.Series{{Name: "L0", Y: series(func(s trainStep) float64 { return s.L0 })}}},
			&report.Lines{Caption: "Explained variance of each batch", XLabel: "step", YLabel: "EV",
				X: x, Series: []report.Series{{Name: "EV", Y: series(func(s trainStep) float64 { return s.ExplainedVariance })}}},
		}
	}
	t := &report.Table{Header: []string{"step", "loss", "MSE", penalty.Name, "L0", "EV", "dead", "lr"}, NumericCols: []int{0, 1, 2, 3, 4, 5, 6, 7}}
	stride := max(len(h)/10, 1)
	for i := 0; i < len(h); i++ {
		if i%stride != 0 && i != len(h)-1 {
			continue
		}
		s := h[i]
		t.Rows = append(t.Rows, []string{fmt.Sprint(s.Step), fmt.Sprintf("%.5g", s.Loss), fmt.Sprintf("%.5g", s.MSE),
			fmt.Sprintf("%.4g", penalty.Y[i]), fmt.Sprintf("%.1f", s.L0), fmt.Sprintf("%.4f", s.ExplainedVariance),
			fmt.Sprint(s.Dead), fmt.Sprintf("%.3g", s.LR)})
	}
	return []report.Block{t}
}

// ---------------------------------------------------------------------------
// Loading an SAE and the model it reads

// saeFlags select an SAE and the model processing it is read under.
type saeFlags struct {
	rf         runFlags
	sae        string
	revision   string
	normFactor float64
	hook       string
}

func (f *saeFlags) register(cmd *cobra.Command) {
	f.rf.register(cmd)
	fl := cmd.Flags()
	fl.StringVar(&f.sae, "sae", "", "SAE: a local SAELens folder, REPO:FOLDER on the Hub (jbloom/GPT2-Small-SAEs-Reformatted:blocks.8.hook_resid_pre), or RELEASE:ID (gpt2-small-res-jb:blocks.8.hook_resid_pre) (required)")
	fl.StringVar(&f.revision, "sae-revision", "", "Hub revision of the SAE repository (default main)")
	fl.Float64Var(&f.normFactor, "norm-scaling-factor", 0, "expected_average_only_in factor for an SAE whose folder lacks it")
	fl.StringVar(&f.hook, "hook", "", "hook point to read (default: the SAE's metadata.hook_name)")
	// The SAE decides these unless given; say so in the help.
	cmd.Flags().Lookup("processing").Usage = "weight processing: hf or tl (default: what the SAE was trained with, from its cfg or SAELens' release table)"
	cmd.Flags().Lookup("prepend-bos").Usage = "put <|endoftext|> before each window (default: the SAE's metadata.prepend_bos)"
}

// saeInfo describes the SAE behind a report.
type saeInfo struct {
	Source             string `json:"source"`
	Release            string `json:"release,omitempty"`
	Repo               string `json:"repo,omitempty"`
	Folder             string `json:"folder,omitempty"`
	Commit             string `json:"commit,omitempty"`
	Dir                string `json:"dir"`
	Vintage            string `json:"cfg_vintage"`
	Architecture       string `json:"architecture"`
	DIn                int    `json:"d_in"`
	DSAE               int    `json:"d_sae"`
	K                  int    `json:"k,omitempty"`
	HookName           string `json:"hook_name"`
	ModelName          string `json:"model_name"`
	ContextSize        int    `json:"context_size"`
	PrependBOS         bool   `json:"prepend_bos"`
	DatasetPath        string `json:"dataset_path,omitempty"`
	RequiresProcessing string `json:"requires_processing"`
}

func describeSAE(spec string, s *sae.SAE) saeInfo {
	c := s.Config
	info := saeInfo{Source: spec, Release: s.Origin.Release, Repo: s.Origin.Repo, Folder: s.Origin.Folder, Commit: s.Origin.Commit,
		Dir: s.Origin.Dir, Vintage: s.Origin.Vintage, Architecture: string(c.Architecture), DIn: c.DIn, DSAE: c.DSAE,
		HookName: c.Metadata.HookName, ModelName: c.Metadata.ModelName, ContextSize: c.Metadata.ContextSize,
		PrependBOS: c.Metadata.PrependBOS, DatasetPath: c.Metadata.DatasetPath, RequiresProcessing: c.RequiresProcessing.String()}
	if c.Architecture == sae.TopK {
		info.K = c.K
	}
	return info
}

func (i saeInfo) fields() []report.Field {
	src := i.Dir
	if i.Repo != "" {
		src = fmt.Sprintf("%s@%s/%s", i.Repo, i.Commit, i.Folder)
		if i.Release != "" {
			src = i.Release + " (" + src + ")"
		}
	}
	shape := fmt.Sprintf("%s, d_in %d, d_sae %d", i.Architecture, i.DIn, i.DSAE)
	if i.K > 0 {
		shape += fmt.Sprintf(", k %d", i.K)
	}
	fields := []report.Field{
		{Key: "SAE", Value: src},
		{Key: "SAE shape", Value: shape},
		{Key: "SAE trained on", Value: fmt.Sprintf("%s at %s, context %d, prepend BOS %v, cfg %s", orDash(i.ModelName), orDash(i.HookName), i.ContextSize, i.PrependBOS, i.Vintage)},
		{Key: "SAE expects", Value: i.RequiresProcessing},
	}
	if i.DatasetPath != "" {
		fields = append(fields, report.Field{Key: "SAE dataset", Value: i.DatasetPath})
	}
	return fields
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// loadSAE resolves --sae: a folder, REPO:FOLDER or RELEASE:ID.
func (a *app) loadSAE(ctx context.Context, f *saeFlags) (*sae.SAE, error) {
	if f.sae == "" {
		return nil, usagef("--sae is required: a folder, REPO:FOLDER or RELEASE:ID")
	}
	start := time.Now()
	defer a.timing("load SAE", start)
	var opts []sae.LoadOption
	if f.normFactor > 0 {
		opts = append(opts, sae.WithNormScalingFactor(f.normFactor))
	}
	if st, err := os.Stat(f.sae); err == nil && st.IsDir() {
		return sae.Load(f.sae, opts...)
	}
	repo, id, ok := strings.Cut(f.sae, ":")
	if !ok || id == "" {
		if rel, found := sae.FindRelease(f.sae); found {
			ids := make([]string, 0, len(rel.Folders))
			for k := range rel.Folders {
				ids = append(ids, k)
			}
			sort.Strings(ids)
			return nil, usagef("--sae %s names a release; add the SAE id, e.g. --sae %s:%s", f.sae, f.sae, ids[0])
		}
		var names []string
		for _, r := range sae.KnownReleases() {
			names = append(names, r.Name)
		}
		return nil, fmt.Errorf("--sae %s: no such folder (a Hub SAE is REPO:FOLDER, or RELEASE:ID with a release of %s)", f.sae, strings.Join(names, ", "))
	}
	if f.revision != "" {
		opts = append(opts, sae.WithRevision(f.revision))
	}
	return sae.LoadPretrained(ctx, a.hub(), repo, id, opts...)
}

// loadModelProcessed is loadModel with any combination of TransformerLens
// weight processing, not just --processing's hf and tl.
func (a *app) loadModelProcessed(ctx context.Context, rf *runFlags, proc gpt2.Processing) (*loadedModel, error) {
	raw := *rf
	raw.processing = "hf"
	lm, err := a.loadModel(ctx, &raw)
	if err != nil {
		return nil, err
	}
	if proc != (gpt2.Processing{}) {
		start := time.Now()
		m, err := gpt2.FromCheckpoint(lm.ck, proc)
		if err != nil {
			lm.Close()
			return nil, err
		}
		lm.model = m
		a.timing("process weights", start)
	}
	return lm, nil
}

// loadModelForSAE loads --model under the weight processing and BOS choice
// the SAE was trained with, unless the flags say otherwise, and returns a
// note saying which was used.
func (a *app) loadModelForSAE(cmd *cobra.Command, f *saeFlags, s *sae.SAE) (*loadedModel, string, error) {
	var proc gpt2.Processing
	var note string
	req := s.Config.RequiresProcessing
	switch {
	case cmd.Flags().Changed("processing"):
		p, err := f.rf.parseProcessing()
		if err != nil {
			return nil, "", err
		}
		proc = p
		note = fmt.Sprintf("--processing %s given: the model runs %s (the SAE expects %s).", f.rf.processing, p, req)
	case req.Known:
		proc = req.GPT2()
		note = fmt.Sprintf("Applied the SAE's weight processing, %s, since --processing was not given.", req)
	default:
		note = "The SAE does not say which weight processing it was trained with; the model runs raw Hugging Face weights (choose with --processing)."
	}
	if !cmd.Flags().Changed("prepend-bos") {
		f.rf.prependBOS = s.Config.Metadata.PrependBOS
		note += fmt.Sprintf(" Prepend BOS: %v, from the SAE's cfg.", f.rf.prependBOS)
	}
	lm, err := a.loadModelProcessed(cmd.Context(), &f.rf, proc)
	if err != nil {
		return nil, "", err
	}
	return lm, note, nil
}

// saeHook picks the hook to read and checks that the model has it and that
// its width is the SAE's d_in.
func (a *app) saeHook(ctx context.Context, f *saeFlags, lm *loadedModel, s *sae.SAE) (string, error) {
	hook := f.hook
	if hook == "" {
		hook = s.Config.Metadata.HookName
	}
	if hook == "" {
		return "", usagef("the SAE's cfg names no hook point; pass --hook")
	}
	if err := lm.model.CheckHookName(hook); err != nil {
		return "", err
	}
	res, err := lm.model.Run(ctx, [][]int{{lm.tok.EOT()}}, gpt2.RunOptions{Cache: gpt2.HookName(hook), Logits: gpt2.LogitsNone})
	if err != nil {
		return "", err
	}
	rows, err := hookRows(res.Cache[hook], s.Config.Metadata.HookHeadIndex)
	if err != nil {
		return "", err
	}
	if width := len(rows); width != s.Config.DIn {
		what := ""
		if h := s.Config.Metadata.HookHeadIndex; h != nil {
			what = fmt.Sprintf(" (head %d)", *h)
		}
		return "", fmt.Errorf("the SAE has d_in %d but %s%s of this model gives %d values per token: the SAE belongs to another hook or model", s.Config.DIn, hook, what, width)
	}
	return hook, nil
}

// hookRows flattens a [1, pos, …] activation into one row per position (one
// head's slice with head).
func hookRows(act *gpt2.Activation, head *int) ([]float32, error) {
	if act == nil || len(act.Shape) < 3 {
		return nil, errors.New("the run did not produce the hook's activation")
	}
	if head == nil {
		return act.Data, nil
	}
	if len(act.Shape) != 4 || *head < 0 || *head >= act.Shape[2] {
		return nil, fmt.Errorf("the SAE's hook_head_index %d does not fit %s of shape %v", *head, act.Name, act.Shape)
	}
	p, h, d := act.Shape[1], act.Shape[2], act.Shape[3]
	out := make([]float32, 0, p*d)
	for t := 0; t < p; t++ {
		off := (t*h + *head) * d
		out = append(out, act.Data[off:off+d]...)
	}
	return out, nil
}

// ---------------------------------------------------------------------------
// sae eval

type saeEvalResult struct {
	Model      string   `json:"model"`
	Commit     string   `json:"commit,omitempty"`
	Processing string   `json:"processing"`
	PrependBOS bool     `json:"prepend_bos"`
	SAE        saeInfo  `json:"sae"`
	Hook       string   `json:"hook_name"`
	Corpus     []string `json:"corpus"`
	Windows    int      `json:"windows"`
	Context    int      `json:"context_size"`

	ProcessingNote    string `json:"processing_note"`
	ProcessingWarning string `json:"processing_warning,omitempty"`

	Metrics          evalMetrics   `json:"metrics"`
	ActiveFeatures   activeSummary `json:"active_features"`
	DensityHistogram []densityBin  `json:"density_histogram"`
	FeatureDensity   []float64     `json:"feature_density"`
}

// evalMetrics uses SAELens' run_evals names.
type evalMetrics struct {
	Tokens                       int64    `json:"tokens"`
	L0                           float64  `json:"l0"`
	L1                           float64  `json:"l1"`
	MSE                          float64  `json:"mse"`
	ExplainedVariance            float64  `json:"explained_variance"`
	ExplainedVarianceLegacy      float64  `json:"explained_variance_legacy"`
	ExplainedVarianceSAELensCode float64  `json:"explained_variance_saelens_code"`
	CosSim                       float64  `json:"cossim"`
	L2Ratio                      float64  `json:"l2_ratio"`
	RelativeReconstructionBias   float64  `json:"relative_reconstruction_bias"`
	CELossWithoutSAE             *float64 `json:"ce_loss_without_sae,omitempty"`
	CELossWithSAE                *float64 `json:"ce_loss_with_sae,omitempty"`
	CELossWithAblation           *float64 `json:"ce_loss_with_ablation,omitempty"`
	CELossScore                  *float64 `json:"ce_loss_score,omitempty"`
	KLDivWithSAE                 *float64 `json:"kl_div_with_sae,omitempty"`
	KLDivWithAblation            *float64 `json:"kl_div_with_ablation,omitempty"`
	KLDivScore                   *float64 `json:"kl_div_score,omitempty"`
	Dead                         int      `json:"dead"`
	Below1e5                     int      `json:"below_1e-5"`
	Below1e6                     int      `json:"below_1e-6"`
}

type activeSummary struct {
	Min    int     `json:"min"`
	P10    int     `json:"p10"`
	Median int     `json:"median"`
	Mean   float64 `json:"mean"`
	P90    int     `json:"p90"`
	Max    int     `json:"max"`
}

type densityBin struct {
	Log10Lo float64 `json:"log10_lo"`
	Log10Hi float64 `json:"log10_hi"`
	Count   int     `json:"count"`
}

func (a *app) saeEvalCommand() *cobra.Command {
	var f saeFlags
	var corpus []string
	var windows, contextSize, batch int
	var reconOnly bool
	var format, out string
	cmd := &cobra.Command{
		Use:   "eval --sae SAE --corpus FILE[,FILE]",
		Short: "SAELens' metrics of an SAE over a corpus: L0, explained variance, CE-loss and KL scores, densities",
		Long: `eval cuts the corpus into --windows windows of the SAE's context size, runs the model, reads
the SAE's hook and reports SAELens' run_evals metrics: L0, explained variance (dataset-level;
also the legacy per-token and SAELens-code variants), MSE, cosine similarity, the CE-loss score
(CE loss recovered against zero-ablating the hook, with the clean, spliced and ablated CE) and
the KL score, and feature densities (dead, below 1e-5 and 1e-6, histogram). BOS and EOS
positions are left out of every metric and keep the model's own activation, as in SAELens.

The model runs with the weight processing the SAE was trained under (from its cfg or SAELens'
release table) unless --processing is given; a mismatch is reported as a warning.`,
		Example: "  factlens sae eval --model gpt2 --sae gpt2-small-res-jb:blocks.8.hook_resid_pre --corpus owt.jsonl\n" +
			"  factlens sae eval --model gpt2 --sae ./sae-l6 --corpus shakespeare.txt --format html --out eval.html",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if err := checkFormat(format, "text", "json", "md", "html"); err != nil {
				return err
			}
			if len(corpus) == 0 {
				return usagef("--corpus FILE[,FILE] is required")
			}
			if windows < 1 || batch < 1 || contextSize < 0 {
				return usagef("--windows and --batch must be positive, --context not negative")
			}
			s, err := a.loadSAE(ctx, &f)
			if err != nil {
				return err
			}
			lm, note, err := a.loadModelForSAE(cmd, &f, s)
			if err != nil {
				return err
			}
			defer lm.Close()
			hook, err := a.saeHook(ctx, &f, lm, s)
			if err != nil {
				return err
			}
			ctxSize := contextSize
			if ctxSize == 0 {
				ctxSize = s.Config.Metadata.ContextSize
				if ctxSize <= 0 {
					ctxSize = 128
				}
				if ctxSize > lm.model.NCtx() {
					note += fmt.Sprintf(" The SAE's context %d exceeds the model's %d positions; using %d.", ctxSize, lm.model.NCtx(), lm.model.NCtx())
					ctxSize = lm.model.NCtx()
				}
			} else if ctxSize > lm.model.NCtx() {
				return usagef("--context %d exceeds the model's %d positions", ctxSize, lm.model.NCtx())
			}
			start := time.Now()
			wins, err := sae.CorpusWindows(ctx, lm.tok, sae.StoreConfig{Files: corpus, Hub: a.hub(),
				ContextSize: ctxSize, PrependBOS: lm.prependBOS}, windows)
			if err != nil {
				return fmt.Errorf("--corpus: %w", err)
			}
			a.timing("tokenize corpus", start)
			start = time.Now()
			rep, err := sae.Evaluate(ctx, lm.model, s, wins, sae.EvalOptions{Hook: hook, PrependBOS: lm.prependBOS,
				Batch: batch, ReconstructionOnly: reconOnly})
			if err != nil {
				return err
			}
			a.timing("evaluate", start)
			if rep.ProcessingWarning != "" && !a.quiet {
				fmt.Fprintf(a.stderr, "factlens: warning: %s\n", rep.ProcessingWarning)
			}
			res := evalResult(lm, s, f.sae, rep, corpus, len(wins), ctxSize, note, !reconOnly)
			return writeOutput(a.stdout, out, func(w io.Writer) error {
				return renderResult(w, format, res, func() *report.Document { return evalDocument(res, lm.provenance()) })
			})
		},
	}
	f.register(cmd)
	fl := cmd.Flags()
	fl.StringSliceVar(&corpus, "corpus", nil, "evaluation corpus: plain text, .jsonl or .parquet with a \"text\" field, or hf://datasets/ORG/NAME[@REV]/FILE (required)")
	fl.IntVar(&windows, "windows", 64, "number of context windows to evaluate")
	fl.IntVar(&contextSize, "context", 0, "tokens per window, BOS included (default: the SAE's context_size, else 128)")
	fl.IntVar(&batch, "batch", 8, "windows per forward pass")
	fl.BoolVar(&reconOnly, "reconstruction-only", false, "skip the two extra forward passes of the CE-loss and KL scores")
	fl.StringVarP(&format, "format", "f", "text", "output format: text, json, md or html")
	fl.StringVarP(&out, "out", "o", "", "write the report to this file instead of standard output")
	return cmd
}

func evalResult(lm *loadedModel, s *sae.SAE, spec string, rep *sae.EvalReport, corpus []string, windows, ctxSize int, note string, ce bool) *saeEvalResult {
	r := rep.Reconstruction
	res := &saeEvalResult{
		Model: lm.ck.Source.Ref, Commit: lm.ck.Source.Commit, Processing: lm.model.Processing.String(), PrependBOS: lm.prependBOS,
		SAE: describeSAE(spec, s), Hook: rep.Hook, Corpus: corpus, Windows: windows, Context: ctxSize,
		ProcessingNote: note, ProcessingWarning: rep.ProcessingWarning,
		Metrics: evalMetrics{Tokens: r.Tokens, L0: r.L0, L1: r.L1, MSE: r.MSE, ExplainedVariance: r.ExplainedVariance,
			ExplainedVarianceLegacy: r.ExplainedVarianceLegacy, ExplainedVarianceSAELensCode: r.ExplainedVarianceSAELensCode,
			CosSim: r.CosSim, L2Ratio: r.L2Ratio, RelativeReconstructionBias: r.RelativeReconstructionBias,
			Dead: r.Dead, Below1e5: r.DensityBelow1e5, Below1e6: r.DensityBelow1e6},
		ActiveFeatures: activeSummary{Min: r.ActiveFeatures.Min, P10: r.ActiveFeatures.P10, Median: r.ActiveFeatures.Median,
			Mean: r.ActiveFeatures.Mean, P90: r.ActiveFeatures.P90, Max: r.ActiveFeatures.Max},
		FeatureDensity: r.FeatureDensity,
	}
	if ce {
		m := &res.Metrics
		m.CELossWithoutSAE, m.CELossWithSAE, m.CELossWithAblation = ptr(rep.CELossClean), ptr(rep.CELossWithSAE), ptr(rep.CELossWithAblation)
		m.CELossScore, m.KLDivWithSAE, m.KLDivWithAblation, m.KLDivScore = ptr(rep.CELossScore), ptr(rep.KLWithSAE), ptr(rep.KLWithAblation), ptr(rep.KLScore)
	}
	for _, b := range r.DensityHistogram {
		res.DensityHistogram = append(res.DensityHistogram, densityBin{Log10Lo: b.Lo, Log10Hi: b.Hi, Count: b.Count})
	}
	return res
}

func ptr(v float64) *float64 { return &v }

func evalDocument(r *saeEvalResult, prov []report.Field) *report.Document {
	prov = append(slices.Clone(prov), r.SAE.fields()...)
	prov = append(prov,
		report.Field{Key: "hook", Value: r.Hook},
		report.Field{Key: "corpus", Value: fmt.Sprintf("%s (%d windows of %d tokens)", strings.Join(r.Corpus, ", "), r.Windows, r.Context)})
	doc := &report.Document{Title: "SAE evaluation at " + r.Hook, Provenance: prov}
	doc.Blocks = append(doc.Blocks, &report.Paragraph{Text: r.ProcessingNote})
	if r.ProcessingWarning != "" {
		doc.Blocks = append(doc.Blocks, &report.Paragraph{Text: "Warning: " + r.ProcessingWarning})
	}
	m := r.Metrics
	f4 := func(v float64) string { return fmt.Sprintf("%.4f", v) }
	t := &report.Table{Header: []string{"metric", "value", "SAELens name"}, NumericCols: []int{1}, Rows: [][]string{
		{"tokens evaluated (BOS/EOS excluded)", fmt.Sprint(m.Tokens), ""},
		{"L0 (mean active latents per token)", fmt.Sprintf("%.2f", m.L0), "l0"},
		{"L1 (mean Σ activations per token)", fmt.Sprintf("%.4g", m.L1), "l1"},
		{"explained variance (dataset-level)", f4(m.ExplainedVariance), "explained_variance"},
		{"explained variance, legacy per-token", f4(m.ExplainedVarianceLegacy), "explained_variance_legacy"},
		{"explained variance as SAELens' code computes it", f4(m.ExplainedVarianceSAELensCode), ""},
		{"MSE (mean over tokens and d_in)", fmt.Sprintf("%.5g", m.MSE), "mse"},
		{"cosine similarity of x and x̂", f4(m.CosSim), "cossim"},
		{"‖x̂‖ / ‖x‖", f4(m.L2Ratio), "l2_ratio"},
		{"relative reconstruction bias", f4(m.RelativeReconstructionBias), "relative_reconstruction_bias"},
	}}
	if m.CELossScore != nil {
		t.Rows = append(t.Rows,
			[]string{"CE loss, clean (nats/token)", f4(*m.CELossWithoutSAE), "ce_loss_without_sae"},
			[]string{"CE loss with the SAE spliced in", f4(*m.CELossWithSAE), "ce_loss_with_sae"},
			[]string{"CE loss with the hook zero-ablated", f4(*m.CELossWithAblation), "ce_loss_with_ablation"},
			[]string{"CE loss score (recovered vs zero-ablation)", f4(*m.CELossScore), "ce_loss_score"},
			[]string{"KL(clean ‖ SAE)", fmt.Sprintf("%.5g", *m.KLDivWithSAE), "kl_div_with_sae"},
			[]string{"KL(clean ‖ ablated)", fmt.Sprintf("%.5g", *m.KLDivWithAblation), "kl_div_with_ablation"},
			[]string{"KL score", f4(*m.KLDivScore), "kl_div_score"})
	}
	t.Rows = append(t.Rows,
		[]string{"dead latents (never fired)", fmt.Sprint(m.Dead), ""},
		[]string{"latents with density < 1e-5", fmt.Sprint(m.Below1e5), "below_1e-5"},
		[]string{"latents with density < 1e-6", fmt.Sprint(m.Below1e6), "below_1e-6"})
	doc.Blocks = append(doc.Blocks, &report.Heading{Level: 2, Text: "Metrics"}, t)
	if m.Tokens > 0 && float64(m.Tokens) < 1e6 {
		doc.Blocks = append(doc.Blocks, &report.Paragraph{Text: fmt.Sprintf(
			"With %d tokens a density below %.2g cannot be told from a dead latent; the 1e-5 and 1e-6 counts need more windows to mean what they say.", m.Tokens, 1/float64(m.Tokens))})
	}
	af := r.ActiveFeatures
	doc.Blocks = append(doc.Blocks, &report.Heading{Level: 2, Text: "Active latents per token"},
		&report.Table{Header: []string{"min", "p10", "median", "mean", "p90", "max"}, NumericCols: []int{0, 1, 2, 3, 4, 5},
			Rows: [][]string{{fmt.Sprint(af.Min), fmt.Sprint(af.P10), fmt.Sprint(af.Median), fmt.Sprintf("%.2f", af.Mean), fmt.Sprint(af.P90), fmt.Sprint(af.Max)}}})
	bars := &report.Bars{Caption: "Feature density histogram: latents by log10(fraction of tokens on which they fire + 1e-10)",
		XLabel: "log10 density", YLabel: "latents"}
	for _, b := range r.DensityHistogram {
		bars.Labels = append(bars.Labels, fmt.Sprintf("[%.1f,%.1f)", b.Log10Lo, b.Log10Hi))
		bars.Values = append(bars.Values, float64(b.Count))
	}
	doc.Blocks = append(doc.Blocks, &report.Heading{Level: 2, Text: "Feature densities"}, bars)
	return doc
}

// ---------------------------------------------------------------------------
// sae features

type saeFeaturesResult struct {
	Model      string  `json:"model"`
	Commit     string  `json:"commit,omitempty"`
	Processing string  `json:"processing"`
	PrependBOS bool    `json:"prepend_bos"`
	SAE        saeInfo `json:"sae"`
	Hook       string  `json:"hook_name"`

	ProcessingNote    string `json:"processing_note"`
	ProcessingWarning string `json:"processing_warning,omitempty"`

	Prompt string   `json:"prompt"`
	IDs    []int    `json:"ids"`
	Tokens []string `json:"tokens"`

	// Positions[p] lists the latents active at token p.
	Positions  []tokenFeatures `json:"positions"`
	MeanActive float64         `json:"mean_active"`
	MinActive  int             `json:"min_active"`
	MaxActive  int             `json:"max_active"`
}

type tokenFeatures struct {
	Pos    int            `json:"pos"`
	ID     int            `json:"id"`
	Token  string         `json:"token"`
	Active int            `json:"active"`
	Top    []featureValue `json:"top"`
	// CosSim is cos(x, x̂) and RelativeError ‖x − x̂‖²/‖x‖² at this token.
	CosSim        float64 `json:"cossim"`
	RelativeError float64 `json:"relative_error"`
}

type featureValue struct {
	Index int     `json:"index"`
	Value float32 `json:"value"`
}

func (a *app) saeFeaturesCommand() *cobra.Command {
	var f saeFlags
	var format, out string
	var top int
	cmd := &cobra.Command{
		Use:   "features --sae SAE TEXT",
		Short: "The SAE latents active at every token of TEXT (- reads standard input)",
		Long: `features runs TEXT, reads the SAE's hook and lists at every token how many latents are
active (the L0 of that token: residual-stream SAEs typically fire a few dozen at a time) and the
strongest ones with their activations, plus how well the SAE reconstructs the token's
activation. The model runs with the weight processing the SAE was trained under unless
--processing is given.`,
		Example: "  factlens sae features --model gpt2 --sae gpt2-small-res-jb:blocks.8.hook_resid_pre \"Michael Jordan plays the sport of\"\n" +
			"  factlens sae features --model gpt2 --sae ./sae-l6 --format html --out features.html \"To be, or not to be\"",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if err := checkFormat(format, "text", "json", "md", "html"); err != nil {
				return err
			}
			if top < 1 {
				return usagef("--top must be at least 1")
			}
			text, err := a.readTextArg(args[0])
			if err != nil {
				return err
			}
			s, err := a.loadSAE(ctx, &f)
			if err != nil {
				return err
			}
			lm, note, err := a.loadModelForSAE(cmd, &f, s)
			if err != nil {
				return err
			}
			defer lm.Close()
			ids, err := lm.encodePrompt(text)
			if err != nil {
				return err
			}
			hook, err := a.saeHook(ctx, &f, lm, s)
			if err != nil {
				return err
			}
			res, err := featureReport(ctx, lm, s, hook, text, ids, top)
			if err != nil {
				return err
			}
			res.SAE, res.ProcessingNote = describeSAE(f.sae, s), note
			res.ProcessingWarning = sae.ProcessingWarning(s.Config, hook, lm.model.Processing)
			if res.ProcessingWarning != "" && !a.quiet {
				fmt.Fprintf(a.stderr, "factlens: warning: %s\n", res.ProcessingWarning)
			}
			return writeOutput(a.stdout, out, func(w io.Writer) error {
				return renderResult(w, format, res, func() *report.Document { return featuresDocument(res, lm.provenance()) })
			})
		},
	}
	f.register(cmd)
	cmd.Flags().IntVarP(&top, "top", "k", 10, "latents listed per token")
	cmd.Flags().StringVarP(&format, "format", "f", "text", "output format: text, json, md or html")
	cmd.Flags().StringVarP(&out, "out", "o", "", "write the report to this file instead of standard output")
	return cmd
}

func featureReport(ctx context.Context, lm *loadedModel, s *sae.SAE, hook, text string, ids []int, top int) (*saeFeaturesResult, error) {
	run, err := lm.model.Run(ctx, [][]int{ids}, gpt2.RunOptions{Cache: gpt2.HookName(hook), Logits: gpt2.LogitsNone, PrependBOS: lm.prependBOS})
	if err != nil {
		return nil, err
	}
	tokens := run.Tokens[0]
	x, err := hookRows(run.Cache[hook], s.Config.Metadata.HookHeadIndex)
	if err != nil {
		return nil, err
	}
	n, dIn, dSAE := len(tokens), s.Config.DIn, s.Config.DSAE
	acts, xhat, err := s.Reconstruct(x, n)
	if err != nil {
		return nil, err
	}
	res := &saeFeaturesResult{Model: lm.ck.Source.Ref, Commit: lm.ck.Source.Commit, Processing: lm.model.Processing.String(),
		PrependBOS: lm.prependBOS, Hook: hook, Prompt: text, IDs: tokens, Tokens: lm.tokenStrings(tokens), MinActive: math.MaxInt}
	tops := sae.TopFeatures(acts, n, dSAE, top)
	for p := 0; p < n; p++ {
		tf := tokenFeatures{Pos: p, ID: tokens[p], Token: res.Tokens[p]}
		for _, v := range acts[p*dSAE : (p+1)*dSAE] {
			if v > 0 {
				tf.Active++
			}
		}
		for _, af := range tops[p] {
			tf.Top = append(tf.Top, featureValue{Index: af.Index, Value: af.Value})
		}
		var xx, hh, xh, ee float64
		for i := 0; i < dIn; i++ {
			xv, hv := float64(x[p*dIn+i]), float64(xhat[p*dIn+i])
			xx, hh, xh, ee = xx+xv*xv, hh+hv*hv, xh+xv*hv, ee+(xv-hv)*(xv-hv)
		}
		if xx > 0 && hh > 0 {
			tf.CosSim = xh / math.Sqrt(xx*hh)
		}
		if xx > 0 {
			tf.RelativeError = ee / xx
		}
		res.Positions = append(res.Positions, tf)
		res.MeanActive += float64(tf.Active) / float64(n)
		res.MinActive, res.MaxActive = min(res.MinActive, tf.Active), max(res.MaxActive, tf.Active)
	}
	return res, nil
}

func featuresDocument(r *saeFeaturesResult, prov []report.Field) *report.Document {
	prov = append(slices.Clone(prov), r.SAE.fields()...)
	prov = append(prov, report.Field{Key: "hook", Value: r.Hook})
	doc := &report.Document{Title: "SAE features of " + report.Token(r.Prompt), Provenance: prov}
	doc.Blocks = append(doc.Blocks, &report.Paragraph{Text: r.ProcessingNote})
	if r.ProcessingWarning != "" {
		doc.Blocks = append(doc.Blocks, &report.Paragraph{Text: "Warning: " + r.ProcessingWarning})
	}
	doc.Blocks = append(doc.Blocks, &report.Paragraph{Text: fmt.Sprintf(
		"Active latents per token: mean %.1f, min %d, max %d (of %d).", r.MeanActive, r.MinActive, r.MaxActive, r.SAE.DSAE)})
	labels := make([]string, len(r.Positions))
	bars := &report.Bars{Caption: "Active latents (L0) at each token", XLabel: "token", YLabel: "active latents"}
	for i, p := range r.Positions {
		labels[i] = fmt.Sprintf("%d %s", p.Pos, report.Token(p.Token))
		bars.Labels = append(bars.Labels, labels[i])
		bars.Values = append(bars.Values, float64(p.Active))
	}
	t := &report.Table{Header: []string{"pos", "token", "active", "cos(x, x̂)", "top latents (index: activation)"}, NumericCols: []int{0, 2, 3}}
	for _, p := range r.Positions {
		cells := make([]string, len(p.Top))
		for i, fv := range p.Top {
			cells[i] = fmt.Sprintf("%d: %.3g", fv.Index, fv.Value)
		}
		t.Rows = append(t.Rows, []string{fmt.Sprint(p.Pos), report.Token(p.Token), fmt.Sprint(p.Active),
			fmt.Sprintf("%.3f", p.CosSim), strings.Join(cells, ", ")})
	}
	doc.Blocks = append(doc.Blocks, bars, t)

	// The latents that are strongest anywhere, against every token.
	best := map[int]float32{}
	for _, p := range r.Positions {
		for _, fv := range p.Top {
			best[fv.Index] = max(best[fv.Index], fv.Value)
		}
	}
	idx := make([]int, 0, len(best))
	for i := range best {
		idx = append(idx, i)
	}
	sort.Slice(idx, func(a, b int) bool {
		if best[idx[a]] != best[idx[b]] {
			return best[idx[a]] > best[idx[b]]
		}
		return idx[a] < idx[b]
	})
	idx = idx[:min(len(idx), 20)]
	if len(idx) > 0 {
		grid := make([][]float64, len(idx))
		rows := make([]string, len(idx))
		for i, j := range idx {
			rows[i] = fmt.Sprintf("latent %d", j)
			grid[i] = make([]float64, len(r.Positions))
			for p, pos := range r.Positions {
				grid[i][p] = math.NaN() // not among this token's top latents
				for _, fv := range pos.Top {
					if fv.Index == j {
						grid[i][p] = float64(fv.Value)
					}
				}
			}
		}
		doc.Blocks = append(doc.Blocks, &report.Heatmap{Caption: "Strongest latents × tokens (empty: not among the token's top latents)",
			RowLabels: rows, ColLabels: labels, Values: grid, Digits: 2})
	}
	return doc
}
