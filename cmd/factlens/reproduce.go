package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/factlens/factlens/cmd/factlens/report"
	"github.com/factlens/factlens/gpt2"
	"github.com/factlens/factlens/reproduce"
	"github.com/factlens/factlens/toy"
)

// This file holds `factlens reproduce STUDY`: flags, datasets and the run;
// reproduce_report.go renders the results.

var reproduceStudies = []string{reproduce.StudyROME, reproduce.StudyFactFinding, reproduce.StudySuperposition, reproduce.StudySparseProbing}

func (a *app) reproduceCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "reproduce STUDY",
		Short: "Run a published fact-recall study on a model and compare with the paper: " + strings.Join(reproduceStudies, ", "),
		Long: `reproduce runs one published study on a model and writes a report whose core is a table: each
claim with its source, the paper's figure, this model's number, and a verdict in words reached by a
rule stated with its thresholds. Every number but the papers' figures is computed by the run.

Studies:
  rome            ROME's causal tracing over known_1000 (Meng et al. 2022)
  fact-finding    athletes → sport (Nanda, Rajamanoharan, Kramár & Shah 2023)
  superposition   facts vs lookup neurons, shared AND gates, SAE features per token, a toy model
  sparse-probing  k-sparse neuron probes for sport and multi-token names (Gurnee et al. 2023)

Verdicts are "supported", "not supported", "not found" (e.g. the model knows 0 facts),
"inconclusive" (too few facts) or "not measured" (an optional input was not given).`,
		Example: "  factlens reproduce rome --model gpt2 --limit 50 --format html --out rome.html\n" +
			"  factlens reproduce fact-finding --model gpt2-xl --limit 100\n" +
			"  factlens reproduce superposition --sae gpt2-small-res-jb:blocks.2.hook_resid_pre\n" +
			"  factlens reproduce sparse-probing --format md",
		Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usagef("name a study: %s", strings.Join(reproduceStudies, ", "))
			}
			return usagef("unknown study %q (want one of %s)", args[0], strings.Join(reproduceStudies, ", "))
		},
	}
	for _, study := range reproduceStudies {
		cmd.AddCommand(a.reproduceStudyCommand(study))
	}
	return cmd
}

// reproduceFlags are every study's flags; each study registers the ones it
// uses.
type reproduceFlags struct {
	rf       runFlags
	of       outputFlags
	factsDir string
	limit    int
	seed     uint64
	minFacts int

	dataset string // rome

	athletes  []string // athlete studies
	lre       bool
	prompt    string
	threshold float64

	samples    int // rome
	window     int
	noiseScale float64

	alternates int // fact-finding, superposition

	sae, saeRevision string // superposition
	toyDir           string

	ks, layers string // sparse-probing
}

func (a *app) reproduceStudyCommand(study string) *cobra.Command {
	var f reproduceFlags
	short := map[string]string{
		reproduce.StudyROME:          "ROME causal tracing over known_1000: ATE and AIE by layer for hidden states, MLPs and attention",
		reproduce.StudyFactFinding:   "Fact Finding's athletes → sport: lookup layers, name gathering, probes, AND gates, counterfactual names",
		reproduce.StudySuperposition: "facts vs lookup neurons, shared AND gates, active SAE features per token, a toy model's facts per neuron",
		reproduce.StudySparseProbing: "k-sparse probes on MLP neurons: F1 vs k by layer for sport and multi-token-name detection",
	}[study]
	cmd := &cobra.Command{
		Use:   study,
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.runReproduce(cmd, study, &f)
		},
	}
	f.rf.register(cmd)
	f.of.register(cmd)
	fl := cmd.Flags()
	fl.StringVar(&f.factsDir, "facts-dir", defaultFactsDir, "folder holding the built-in datasets (lre/ and rome/), relative to the working directory")
	fl.IntVar(&f.limit, "limit", 0, "study at most this many of the facts the model knows, a sample drawn with --seed (0: all)")
	fl.Uint64Var(&f.seed, "seed", 1, "seed for the sample, the noise and the alternate names")
	fl.IntVar(&f.minFacts, "min-facts", 0, "known facts a verdict needs, fewer give \"inconclusive\" (default 10 for rome, 20 otherwise)")
	switch study {
	case reproduce.StudyROME:
		fl.StringVar(&f.dataset, "dataset", "", "facts: a known_1000-style .json, an LRE relation .json or a .jsonl of facts (default: ROME's known_1000 in --facts-dir; a toy model's own facts.jsonl)")
		fl.IntVar(&f.samples, "samples", 10, "noisy runs averaged per trace (ROME: 10)")
		fl.IntVar(&f.window, "window", 0, "layers whose MLP or attention outputs are restored together (default: ROME's 10 of 48 scaled to the model, 3 for GPT-2 small)")
		fl.Float64Var(&f.noiseScale, "noise-scale", 3, "noise ν in units of the subjects' embedding standard deviation (ROME: 3)")
	default:
		fl.StringSliceVar(&f.athletes, "athletes", nil, "more athletes: LRE relation .json, .jsonl facts or .csv with athlete and sport columns (repeatable)")
		fl.BoolVar(&f.lre, "lre", true, "include the LRE person_plays_pro_sport athletes from --facts-dir")
		fl.StringVar(&f.prompt, "prompt", "one-shot", "prompt: one-shot (Fact Finding's), zero-shot (\"{} plays the sport of\") or a template with {} for the name")
		fl.Float64Var(&f.threshold, "threshold", 0.5, "probability on the right sport's first token an athlete needs to count as known (Fact Finding: 0.5)")
	}
	switch study {
	case reproduce.StudyFactFinding, reproduce.StudySuperposition:
		fl.IntVar(&f.alternates, "alternates", 4, "other first and last names per name in the AND and counterfactual tests")
	}
	switch study {
	case reproduce.StudySuperposition:
		fl.StringVar(&f.sae, "sae", "", "SAE read at the final name token: a folder, REPO:FOLDER or RELEASE:ID (optional)")
		fl.StringVar(&f.saeRevision, "sae-revision", "", "Hub revision of the SAE repository (default main)")
		fl.StringVar(&f.toyDir, "toy", "demo", "toy model folder whose facts per neuron are measured: demo (the shipped model), a folder, or none")
	case reproduce.StudySparseProbing:
		fl.StringVar(&f.ks, "ks", "1,2,4,8,16,32,64", "probe sizes k (those above d_mlp are dropped)")
		fl.StringVar(&f.layers, "layers", "all", "layers to probe: all or a comma-separated list")
	}
	return cmd
}

// reproProgress draws one bar per stage of a study on a terminal.
func (a *app) reproProgress() (reproduce.Progress, func()) {
	var bar *progressbar.ProgressBar
	stage := ""
	finish := func() {
		if bar != nil {
			_ = bar.Finish()
			bar = nil
		}
	}
	return func(s string, done, total int) {
		if s != stage || bar == nil {
			finish()
			stage = s
			bar = a.newBar(total, s)
		}
		if bar != nil {
			_ = bar.Set(done)
		}
	}, finish
}

func (a *app) runReproduce(cmd *cobra.Command, study string, f *reproduceFlags) error {
	if err := f.of.check(); err != nil {
		return err
	}
	if f.limit < 0 || f.minFacts < 0 {
		return usagef("--limit and --min-facts must not be negative")
	}
	if study == reproduce.StudyROME && (f.samples < 1 || f.window < 0 || f.noiseScale <= 0) {
		return usagef("--samples must be at least 1, --window not negative, --noise-scale positive")
	}
	if study != reproduce.StudyROME && !(f.threshold > 0 && f.threshold < 1) {
		return usagef("--threshold %v: want a probability in (0, 1)", f.threshold)
	}
	if f.alternates < 0 {
		return usagef("--alternates must not be negative")
	}
	ctx := cmd.Context()
	lm, err := a.loadModel(ctx, &f.rf)
	if err != nil {
		return err
	}
	defer lm.Close()
	isToy := toy.IsToyModel(lm.ck.Source.Dir)
	progress, done := a.reproProgress()
	defer done()
	start := time.Now()
	var res any
	var notes []string
	switch study {
	case reproduce.StudyROME:
		res, notes, err = a.reproduceROME(ctx, lm, f, isToy, progress)
	default:
		res, notes, err = a.reproduceAthletes(cmd, study, lm, f, isToy, progress)
	}
	done()
	if err != nil {
		return err
	}
	a.timing("reproduce "+study, start)
	return a.emit(&f.of, res, func() *report.Document { return reproduceDocument(res, lm.provenance(), notes) })
}

func (a *app) reproduceROME(ctx context.Context, lm *loadedModel, f *reproduceFlags, isToy bool, progress reproduce.Progress) (any, []string, error) {
	var notes []string
	path, name := f.dataset, "--dataset "+filepath.Base(f.dataset)
	switch {
	case path != "":
		if !fileExists(path) {
			return nil, nil, usagef("--dataset %s: no such file", path)
		}
	case isToy:
		path, name = filepath.Join(lm.ck.Source.Dir, toy.FactsFile), "the toy model's facts"
		notes = append(notes, "The model is a factlens toy model: its own facts ("+toy.FactsFile+") stand in for known_1000, whose names and words its vocabulary does not know.")
	default:
		p, _, err := datasetPath("rome", f.factsDir)
		if err != nil {
			return nil, nil, err
		}
		path, name = p, "ROME known_1000"
	}
	facts, err := reproduce.LoadFacts(path)
	if err != nil {
		return nil, nil, err
	}
	res, err := reproduce.ROME(ctx, lm.model, lm.tok, facts, reproduce.ROMEConfig{Dataset: name, Paths: []string{path}, PrependBOS: lm.prependBOS,
		Limit: f.limit, Seed: f.seed, Samples: f.samples, Window: f.window, NoiseScale: f.noiseScale, MinFacts: f.minFacts, Progress: progress})
	return res, notes, err
}

// athleteSources resolves the athlete lists: the LRE relation (unless
// --lre=false or the model is a toy, which brings its own) plus --athletes.
func (f *reproduceFlags) athleteSources(cmd *cobra.Command, lm *loadedModel, isToy bool) (paths []string, name string, notes []string, err error) {
	useLRE := f.lre && !(isToy && !cmd.Flags().Changed("lre"))
	if useLRE {
		p, _, err := datasetPath("sport", f.factsDir)
		if err != nil {
			return nil, "", nil, err
		}
		paths = append(paths, p)
		name = "LRE person_plays_pro_sport"
	}
	if isToy && !useLRE && len(f.athletes) == 0 {
		paths = append(paths, filepath.Join(lm.ck.Source.Dir, toy.FactsFile))
		name = "the toy model's sport facts"
		notes = append(notes, "The model is a factlens toy model: its own people and sports ("+toy.FactsFile+") stand in for the LRE athletes, whose names its vocabulary does not know.")
	}
	for _, p := range f.athletes {
		if !fileExists(p) {
			return nil, "", nil, usagef("--athletes %s: no such file", p)
		}
		paths = append(paths, p)
	}
	for _, p := range f.athletes {
		if name != "" {
			name += " + "
		}
		name += filepath.Base(p)
	}
	if len(paths) == 0 {
		return nil, "", nil, usagef("no athletes: --lre=false needs --athletes FILE")
	}
	return paths, name, notes, nil
}

func (f *reproduceFlags) template(cmd *cobra.Command, isToy bool) (string, []string, error) {
	switch {
	case isToy && !cmd.Flags().Changed("prompt"):
		return reproduce.ZeroShotTemplate, []string{"A toy model's 16-token context does not hold the one-shot prompt: the zero-shot template it was trained on is used."}, nil
	case f.prompt == "one-shot":
		return reproduce.OneShotTemplate, nil, nil
	case f.prompt == "zero-shot":
		return reproduce.ZeroShotTemplate, nil, nil
	case strings.Count(f.prompt, "{}") == 1:
		return f.prompt, nil, nil
	}
	return "", nil, usagef("--prompt %q: want one-shot, zero-shot or a template with {} once", f.prompt)
}

func (a *app) reproduceAthletes(cmd *cobra.Command, study string, lm *loadedModel, f *reproduceFlags, isToy bool, progress reproduce.Progress) (any, []string, error) {
	ctx := cmd.Context()
	paths, name, notes, err := f.athleteSources(cmd, lm, isToy)
	if err != nil {
		return nil, nil, err
	}
	tmpl, tnotes, err := f.template(cmd, isToy)
	if err != nil {
		return nil, nil, err
	}
	notes = append(notes, tnotes...)
	athletes, err := reproduce.LoadAthletes(paths...)
	if err != nil {
		return nil, nil, err
	}
	ac := reproduce.AthleteConfig{Dataset: name, Paths: paths, Template: tmpl, PrependBOS: lm.prependBOS, Threshold: f.threshold,
		Limit: f.limit, Seed: f.seed, MinFacts: f.minFacts, Progress: progress}
	switch study {
	case reproduce.StudyFactFinding:
		r, err := reproduce.FactFinding(ctx, lm.model, lm.tok, athletes, reproduce.FactFindingConfig{AthleteConfig: ac, Alternates: f.alternates})
		return r, notes, err
	case reproduce.StudySuperposition:
		cfg := reproduce.SuperpositionConfig{AthleteConfig: ac, Alternates: f.alternates}
		if f.sae != "" {
			in, note, err := a.reproduceSAE(ctx, lm, f)
			if err != nil {
				return nil, nil, err
			}
			cfg.SAE = in
			notes = append(notes, note)
		}
		if f.toyDir != "none" {
			dir := f.toyDir
			if dir == "demo" {
				if dir, err = toy.DemoDir(filepath.Join(os.TempDir(), "factlens")); err != nil {
					return nil, nil, err
				}
			}
			tf, err := toy.Open(dir)
			if err != nil {
				return nil, nil, fmt.Errorf("--toy %s: %w", f.toyDir, err)
			}
			defer tf.Close()
			cfg.Toy = tf
		}
		r, err := reproduce.Superposition(ctx, lm.model, lm.tok, athletes, cfg)
		return r, notes, err
	default:
		cfg := reproduce.SparseProbingConfig{AthleteConfig: ac}
		ks, err := parseIntList("ks", f.ks)
		if err != nil {
			return nil, nil, err
		}
		for _, k := range ks {
			if k < 1 {
				return nil, nil, usagef("--ks: %d is not a probe size", k)
			}
			if k <= lm.model.DMLP() {
				cfg.Ks = append(cfg.Ks, k)
			}
		}
		if len(cfg.Ks) == 0 {
			return nil, nil, usagef("--ks: every size exceeds the model's %d neurons per layer", lm.model.DMLP())
		}
		if cfg.Layers, err = parseLayers("layers", f.layers, lm.model.NLayer()); err != nil {
			return nil, nil, err
		}
		r, err := reproduce.SparseProbing(ctx, lm.model, lm.tok, athletes, cfg)
		return r, notes, err
	}
}

// reproduceSAE loads --sae and, when the SAE was trained under other weight
// processing than the model runs, a second model under the SAE's.
func (a *app) reproduceSAE(ctx context.Context, lm *loadedModel, f *reproduceFlags) (*reproduce.SAEInput, string, error) {
	s, err := a.loadSAE(ctx, &saeFlags{sae: f.sae, revision: f.saeRevision})
	if err != nil {
		return nil, "", err
	}
	in := &reproduce.SAEInput{SAE: s, PrependBOS: s.Config.Metadata.PrependBOS, Description: describeSAE(f.sae, s).fields()[0].Value}
	req := s.Config.RequiresProcessing
	note := fmt.Sprintf("The SAE reads %s with BOS %v, as its cfg says", orDash(s.Config.Metadata.HookName), in.PrependBOS)
	switch {
	case !req.Known:
		note += "; it does not say which weight processing it was trained with, so it reads the model as loaded (" + lm.model.Processing.String() + ")."
	case req.GPT2() == lm.model.Processing:
		note += "; it was trained with the model's weight processing (" + req.String() + ")."
	default:
		m, err := gpt2.FromCheckpoint(lm.ck, req.GPT2())
		if err != nil {
			return nil, "", err
		}
		in.Model = m
		note += "; it reads a copy of the model under the processing it was trained with (" + req.String() + "); the other measurements use " + lm.model.Processing.String() + "."
	}
	in.Note = note
	return in, note, nil
}
