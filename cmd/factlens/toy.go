package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/factlens/factlens/analysis"
	"github.com/factlens/factlens/cmd/factlens/report"
	"github.com/factlens/factlens/toy"
)

func (a *app) toyCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "toy",
		Short: "Train and study small GPT-2 models on synthetic worlds whose facts are known exactly",
		Long: `toy builds synthetic worlds of people named by a (first, last) pair of tokens from shared
pools, each with attributes such as the sport they play, chosen so that neither name alone
predicts them; trains small GPT-2 models (same architecture and checkpoint format as GPT-2,
their own small vocabulary) to recall "{first} {last} plays the sport of" → " {sport}";
measures how many facts fit per MLP neuron; and runs the conjunction test on the result.
A trained folder loads in every factlens command with --model DIR.`,
	}
	cmd.AddCommand(a.toyWorldCommand(), a.toyTrainCommand(), a.toyEvalCommand(), a.toySweepCommand(), a.toyMechanismCommand())
	return cmd
}

// toyFlags are the settings of a world, a model and a training run.
type toyFlags struct {
	world toy.WorldConfig
	model toy.ModelConfig
	train toy.TrainConfig
}

func (f *toyFlags) registerWorld(cmd *cobra.Command, people bool) {
	fl := cmd.Flags()
	if people {
		fl.IntVar(&f.world.People, "people", 512, "number of people (facts = people × relations)")
	}
	fl.Uint64Var(&f.world.Seed, "world-seed", 1, "seed of the world: names and attributes")
	fl.StringSliceVar(&f.world.Relations, "relations", []string{"sport"}, "attributes every person has: "+strings.Join(toy.Relations(), ", "))
	fl.IntVar(&f.world.Values, "values", 4, "values per relation (2..8)")
	fl.IntVar(&f.world.FirstNames, "first-names", 0, fmt.Sprintf("first-name pool size (1..%d; 0: about √(2·people))", toy.MaxPool))
	fl.IntVar(&f.world.LastNames, "last-names", 0, fmt.Sprintf("last-name pool size (1..%d; 0: about √(2·people))", toy.MaxPool))
}

func (f *toyFlags) registerModel(cmd *cobra.Command, dmlp bool) {
	fl := cmd.Flags()
	fl.IntVar(&f.model.Layers, "layers", 1, "transformer blocks")
	fl.IntVar(&f.model.DModel, "d-model", 32, "residual stream width")
	fl.IntVar(&f.model.Heads, "heads", 1, "attention heads per layer")
	if dmlp {
		fl.IntVar(&f.model.DMLP, "d-mlp", 64, "MLP neurons per layer")
	}
	fl.StringVar(&f.model.Activation, "activation", "gelu_new", "MLP activation: gelu_new (GPT-2's), gelu or relu")
}

func (f *toyFlags) registerTrain(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.Uint64Var(&f.train.Seed, "seed", 1, "seed of the initial weights and the batch order")
	fl.Float64Var(&f.train.LR, "lr", 1e-3, "Adam learning rate")
	fl.Float64Var(&f.train.WeightDecay, "weight-decay", 0, "decoupled weight decay (AdamW)")
	fl.IntVar(&f.train.BatchSize, "batch", 128, "facts per step")
	fl.IntVar(&f.train.MaxSteps, "max-steps", 20000, "stop after this many steps")
	fl.IntVar(&f.train.MinSteps, "min-steps", 8000, "train at least this many steps before --patience may stop (large worlds sit at chance for thousands of steps first)")
	fl.IntVar(&f.train.EvalEvery, "eval-every", 250, "steps between recall measurements")
	fl.IntVar(&f.train.Patience, "patience", 10, "stop after this many measurements in a row without progress (more facts recalled, or mean loss down by 1%)")
	fl.IntVar(&f.train.SaveEvery, "save-every", 2000, "steps between checkpoints")
}

func worldProvenance(w toy.WorldConfig) []report.Field {
	return []report.Field{
		{Key: "world", Value: fmt.Sprintf("%d people, relations %s, %d values each, %d first × %d last names, seed %d",
			w.People, strings.Join(w.Relations, ","), w.Values, w.FirstNames, w.LastNames, w.Seed)},
	}
}

func modelProvenance(m toy.ModelConfig) report.Field {
	return report.Field{Key: "model", Value: fmt.Sprintf("%d layer(s), d_model %d, %d head(s), d_mlp %d, %s", m.Layers, m.DModel, m.Heads, m.DMLP, m.Activation)}
}

func trainProvenance(t toy.TrainConfig) report.Field {
	return report.Field{Key: "training", Value: fmt.Sprintf("Adam lr %g, betas %g/%g, weight decay %g, batch %d, seed %d, patience %d × %d steps after %d, max %d steps",
		t.LR, t.Beta1, t.Beta2, t.WeightDecay, t.BatchSize, t.Seed, t.Patience, t.EvalEvery, t.MinSteps, t.MaxSteps)}
}

func baselineTable(bs []toy.Baseline) *report.Table {
	t := &report.Table{Caption: "What a model that does not combine the two names could reach",
		Header: []string{"relation", "chance", "first name only", "last name only"}, NumericCols: []int{1, 2, 3}}
	for _, b := range bs {
		t.Rows = append(t.Rows, []string{b.Relation, pct(b.Chance), pct(b.FirstOnly), pct(b.LastOnly)})
	}
	return t
}

func pct(v float64) string { return fmt.Sprintf("%.1f%%", 100*v) }

type toyWorldResult struct {
	World     *toy.World     `json:"world"`
	Facts     int            `json:"facts"`
	Baselines []toy.Baseline `json:"baselines"`
}

func (a *app) toyWorldCommand() *cobra.Command {
	var f toyFlags
	var format, out string
	var show int
	cmd := &cobra.Command{
		Use:     "world",
		Short:   "Show a synthetic world: its people, their attributes and the single-name baselines",
		Example: "  factlens toy world --people 100 --relations sport,city\n  factlens toy world --format json --out world.json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkFormat(format, "text", "json", "md", "html"); err != nil {
				return err
			}
			w, err := toy.NewWorld(f.world)
			if err != nil {
				return usagef("%v", err)
			}
			res := toyWorldResult{World: w, Facts: len(w.Facts()), Baselines: w.Baselines()}
			return writeOutput(a.stdout, out, func(wr io.Writer) error {
				return renderResult(wr, format, res, func() *report.Document {
					t := &report.Table{Header: []string{"#", "name"}, NumericCols: []int{0}}
					for _, r := range w.Relations {
						t.Header = append(t.Header, r.Name)
					}
					for i, p := range w.People[:min(show, len(w.People))] {
						row := []string{fmt.Sprint(i), p.Name()}
						for _, r := range w.Relations {
							row = append(row, p.Attributes[r.Name])
						}
						t.Rows = append(t.Rows, row)
					}
					t.Caption = fmt.Sprintf("First %d of %d people", len(t.Rows), len(w.People))
					var prompts []string
					for _, fact := range w.Facts()[:min(3, res.Facts)] {
						prompts = append(prompts, fmt.Sprintf("%q → %q", fact.Prompt, fact.Answer))
					}
					return &report.Document{Title: fmt.Sprintf("Toy world: %d facts", res.Facts), Provenance: worldProvenance(w.Config),
						Blocks: []report.Block{&report.Paragraph{Text: "Prompts look like " + strings.Join(prompts, ", ") + "."}, baselineTable(res.Baselines), t}}
				})
			})
		},
	}
	f.registerWorld(cmd, true)
	cmd.Flags().StringVarP(&format, "format", "f", "text", "output format: text, json, md or html")
	cmd.Flags().StringVarP(&out, "out", "o", "", "write the report to this file instead of standard output")
	cmd.Flags().IntVar(&show, "show", 20, "people listed in text, md and html reports")
	return cmd
}

type toyTrainResult struct {
	Dir            string          `json:"dir"`
	State          *toy.TrainState `json:"state"`
	StepsPerSecond float64         `json:"steps_per_second"`
	Baselines      []toy.Baseline  `json:"baselines"`
}

func (a *app) toyTrainCommand() *cobra.Command {
	var f toyFlags
	var format, out string
	var resume, demo bool
	cmd := &cobra.Command{
		Use:   "train DIR",
		Short: "Train a toy model and save it as a GPT-2 checkpoint folder in DIR",
		Long: `train draws the world, trains a small GPT-2 on its facts with Adam until recall stops improving
(or every fact is recalled, or --max-steps), checkpointing into DIR every --save-every steps.
DIR then holds config.json, model.safetensors, vocab.json and merges.txt (a GPT-2 checkpoint
every factlens command loads with --model DIR), world.json (the ground truth), facts.jsonl,
training.json and optimizer.safetensors (for --resume).

--demo trains the model that ships with factlens (toy/testdata/demo), without optimizer
state; regenerate it with
  rm -rf /tmp/toy-demo && go run ./cmd/factlens toy train --demo /tmp/toy-demo && cp /tmp/toy-demo/* toy/testdata/demo/`,
		Example: "  factlens toy train --people 256 --d-mlp 64 runs/toy\n  factlens toy train --resume runs/toy",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkFormat(format, "text", "json", "md", "html"); err != nil {
				return err
			}
			opts := toy.Options{World: f.world, Model: f.model, Train: f.train, Dir: args[0], Resume: resume}
			if demo {
				for _, name := range []string{"people", "world-seed", "relations", "values", "first-names", "last-names",
					"layers", "d-model", "heads", "d-mlp", "activation", "seed", "lr", "weight-decay", "batch", "max-steps", "min-steps", "eval-every",
					"patience", "save-every"} {
					if cmd.Flags().Changed(name) {
						return usagef("--demo fixes the settings; --%s cannot change them", name)
					}
				}
				d := toy.DemoOptions()
				opts.World, opts.Model, opts.Train = d.World, d.Model, d.Train
				opts.NoResumeState = true
			}
			if err := opts.Validate(); err != nil {
				return usagef("%v", err)
			}
			if !resume && toy.IsToyModel(args[0]) {
				return usagef("%s already holds a toy model: use --resume to continue it, or another folder", args[0])
			}
			bar := a.newBar(opts.Train.MaxSteps, "training")
			opts.Progress = func(st *toy.TrainState) {
				if bar != nil {
					last := st.History[len(st.History)-1]
					bar.Describe(fmt.Sprintf("training: recall %.1f%%", 100*last.Accuracy))
					_ = bar.Set(st.Step)
				}
			}
			res, err := toy.Train(cmd.Context(), opts)
			if bar != nil {
				_ = bar.Finish()
			}
			if err != nil {
				return err
			}
			st := res.State
			result := toyTrainResult{Dir: args[0], State: st, StepsPerSecond: st.StepsPerSecond(), Baselines: res.World.Baselines()}
			return writeOutput(a.stdout, out, func(w io.Writer) error {
				return renderResult(w, format, result, func() *report.Document { return trainReport(result) })
			})
		},
	}
	f.registerWorld(cmd, true)
	f.registerModel(cmd, true)
	f.registerTrain(cmd)
	cmd.Flags().BoolVar(&resume, "resume", false, "continue the run saved in DIR (same settings; --max-steps and --patience may grow)")
	cmd.Flags().BoolVar(&demo, "demo", false, "train the demo model with its fixed settings")
	cmd.Flags().StringVarP(&format, "format", "f", "text", "output format: text, json, md or html")
	cmd.Flags().StringVarP(&out, "out", "o", "", "write the report to this file instead of standard output")
	return cmd
}

func trainReport(r toyTrainResult) *report.Document {
	st := r.State
	prov := append(worldProvenance(st.World), modelProvenance(st.Model), trainProvenance(st.Train), report.Field{Key: "folder", Value: r.Dir})
	fin := st.Final
	summary := &report.Table{Header: []string{"facts", "recalled", "recall", "mean p(answer)", "mean loss", "steps", "train seconds", "steps/s", "stopped because"},
		NumericCols: []int{0, 1, 2, 3, 4, 5, 6, 7},
		Rows: [][]string{{fmt.Sprint(fin.Facts), fmt.Sprint(fin.Correct), pct(fin.Accuracy), fmt.Sprintf("%.3f", fin.MeanAnswerProb),
			fmt.Sprintf("%.4f", fin.MeanLoss), fmt.Sprint(st.Step), fmt.Sprintf("%.1f", st.Seconds), fmt.Sprintf("%.1f", r.StepsPerSecond), st.StopReason}}}
	curve := &report.Lines{Caption: "Recall during training", XLabel: "step", YLabel: "facts recalled (%)"}
	rec := report.Series{Name: "recall"}
	for _, p := range st.History {
		curve.X = append(curve.X, float64(p.Step))
		rec.Y = append(rec.Y, 100*p.Accuracy)
	}
	curve.Series = []report.Series{rec}
	return &report.Document{Title: fmt.Sprintf("Toy model: %d of %d facts recalled", fin.Correct, fin.Facts), Provenance: prov,
		Blocks: []report.Block{summary, baselineTable(r.Baselines), curve}}
}

type toyEvalResult struct {
	Dir       string             `json:"dir"`
	Recall    *toy.Recall        `json:"recall"`
	Relations []toyRelationScore `json:"relations"`
	Baselines []toy.Baseline     `json:"baselines"`
	Missed    []toyMissed        `json:"missed"`
}

type toyRelationScore struct {
	Relation string  `json:"relation"`
	Facts    int     `json:"facts"`
	Correct  int     `json:"correct"`
	Accuracy float64 `json:"accuracy"`
}

type toyMissed struct {
	Prompt    string  `json:"prompt"`
	Answer    string  `json:"answer"`
	Predicted string  `json:"predicted"`
	Prob      float64 `json:"answer_prob"`
}

func (a *app) toyEvalCommand() *cobra.Command {
	var format, out string
	cmd := &cobra.Command{
		Use:     "eval DIR",
		Short:   "Measure how many of its world's facts a toy model recalls",
		Example: "  factlens toy eval runs/toy\n  factlens toy eval --format json runs/toy",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkFormat(format, "text", "json", "md", "html"); err != nil {
				return err
			}
			fo, err := toy.Open(args[0])
			if err != nil {
				return err
			}
			defer fo.Close()
			facts := fo.World.Facts()
			ex, err := toy.Encode(fo.Tokenizer, facts)
			if err != nil {
				return err
			}
			rec, err := toy.Evaluate(cmd.Context(), fo.Model, ex)
			if err != nil {
				return err
			}
			res := toyEvalResult{Dir: args[0], Recall: rec, Baselines: fo.World.Baselines()}
			for _, r := range fo.World.Relations {
				s := toyRelationScore{Relation: r.Name}
				for i, fact := range facts {
					if fact.Relation == r.Name {
						s.Facts++
						if rec.Outcomes[i].Correct {
							s.Correct++
						}
					}
				}
				s.Accuracy = float64(s.Correct) / float64(max(1, s.Facts))
				res.Relations = append(res.Relations, s)
			}
			for i, o := range rec.Outcomes {
				if !o.Correct {
					res.Missed = append(res.Missed, toyMissed{Prompt: facts[i].Prompt, Answer: facts[i].Answer, Predicted: fo.Tokenizer.Token(o.Predicted), Prob: o.AnswerProb})
				}
			}
			return writeOutput(a.stdout, out, func(w io.Writer) error {
				return renderResult(w, format, res, func() *report.Document {
					t := &report.Table{Header: []string{"relation", "facts", "recalled", "recall"}, NumericCols: []int{1, 2, 3}}
					for _, s := range res.Relations {
						t.Rows = append(t.Rows, []string{s.Relation, fmt.Sprint(s.Facts), fmt.Sprint(s.Correct), pct(s.Accuracy)})
					}
					miss := &report.Table{Caption: fmt.Sprintf("Missed facts (%d; first 20)", len(res.Missed)),
						Header: []string{"prompt", "answer", "predicted", "p(answer)"}, NumericCols: []int{3}}
					for _, m := range res.Missed[:min(20, len(res.Missed))] {
						miss.Rows = append(miss.Rows, []string{m.Prompt, report.Token(m.Answer), report.Token(m.Predicted), fmt.Sprintf("%.3f", m.Prob)})
					}
					prov := append(worldProvenance(fo.World.Config), modelProvenance(fo.State.Model), report.Field{Key: "folder", Value: args[0]})
					return &report.Document{Title: fmt.Sprintf("Toy model recall: %d of %d facts (%s)", rec.Correct, rec.Facts, pct(rec.Accuracy)),
						Provenance: prov, Blocks: []report.Block{t, baselineTable(res.Baselines), miss}}
				})
			})
		},
	}
	cmd.Flags().StringVarP(&format, "format", "f", "text", "output format: text, json, md or html")
	cmd.Flags().StringVarP(&out, "out", "o", "", "write the report to this file instead of standard output")
	return cmd
}

type toySweepResult struct {
	*toy.SweepResult
	Headline string `json:"headline"`
}

func (a *app) toySweepCommand() *cobra.Command {
	var f toyFlags
	var format, out string
	var people, dmlps []int
	var threshold float64
	var from string
	cmd := &cobra.Command{
		Use:   "sweep",
		Short: "Capacity sweep: facts recalled against number of facts and d_mlp",
		Long: `sweep trains one toy model from scratch for every (--people, --d-mlp) pair with the other
settings shared, and reports recall against the number of facts for each MLP width, the largest
number of facts each width stores at --threshold recall, and the largest facts-per-neuron ratio
reached. Each model trains until its recall stops improving, so a sweep takes minutes to hours
depending on the grid. --from re-renders a sweep saved with --format json, without training.`,
		Example: "  factlens toy sweep --people 64,128,256,512 --d-mlp 8,16,32 --format html --out sweep.html\n" +
			"  factlens toy sweep --format json --out sweep.json && factlens toy sweep --from sweep.json --format html --out sweep.html",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkFormat(format, "text", "json", "md", "html"); err != nil {
				return err
			}
			if from != "" {
				b, err := os.ReadFile(from)
				if err != nil {
					return err
				}
				var r toySweepResult
				if err := json.Unmarshal(b, &r); err != nil || r.SweepResult == nil || len(r.Points) == 0 {
					return fmt.Errorf("%s is not the JSON of a toy sweep (%v)", from, err)
				}
				return writeOutput(a.stdout, out, func(w io.Writer) error {
					return renderResult(w, format, r, func() *report.Document { return sweepReport(r) })
				})
			}
			if threshold <= 0 || threshold > 1 {
				return usagef("--threshold %v: want (0, 1]", threshold)
			}
			cfg := toy.SweepConfig{World: f.world, Model: f.model, Train: f.train, People: people, DMLPs: dmlps, Threshold: threshold}
			if err := cfg.Validate(); err != nil {
				return usagef("%v", err)
			}
			bar := a.newBar(len(people)*len(dmlps), "sweep")
			res, err := toy.Sweep(cmd.Context(), cfg, func(i, n int, p toy.SweepPoint) {
				if bar != nil {
					bar.Describe(fmt.Sprintf("sweep: %d people, d_mlp %d", p.People, p.DMLP))
					_ = bar.Set(i)
				}
			})
			if bar != nil {
				_ = bar.Finish()
			}
			if err != nil {
				return err
			}
			r := toySweepResult{SweepResult: res, Headline: res.Headline()}
			return writeOutput(a.stdout, out, func(w io.Writer) error {
				return renderResult(w, format, r, func() *report.Document { return sweepReport(r) })
			})
		},
	}
	f.registerWorld(cmd, false)
	f.registerModel(cmd, false)
	f.registerTrain(cmd)
	cmd.Flags().IntSliceVar(&people, "people", []int{256, 512, 1024, 2048, 4096}, "people counts of the grid")
	cmd.Flags().IntSliceVar(&dmlps, "d-mlp", []int{1, 2, 4, 8, 16, 32}, "MLP widths of the grid (d_mlp 1 is the control: what attention and LayerNorm store alone)")
	cmd.Flags().Float64Var(&threshold, "threshold", 0.9, "recall a model must reach to count as storing its facts")
	cmd.Flags().StringVar(&from, "from", "", "render this saved JSON sweep instead of training")
	cmd.Flags().StringVarP(&format, "format", "f", "text", "output format: text, json, md or html")
	cmd.Flags().StringVarP(&out, "out", "o", "", "write the report to this file instead of standard output")
	return cmd
}

func sweepReport(r toySweepResult) *report.Document {
	c := r.Config
	m := c.Model
	prov := []report.Field{
		{Key: "world", Value: fmt.Sprintf("relations %s, %d values each, seed %d", strings.Join(c.World.Relations, ","), c.World.Values, c.World.Seed)},
		{Key: "model", Value: fmt.Sprintf("%d layer(s), d_model %d, %d head(s), %s", m.Layers, m.DModel, m.Heads, m.Activation)},
		trainProvenance(c.Train),
		{Key: "threshold", Value: pct(c.Threshold)},
	}
	points := &report.Table{Caption: "Every trained model",
		Header: []string{"people", "facts", "d_mlp", "neurons", "params", "recall", "recalled", "memorized", "memorized/neuron", "recall, MLP ablated",
			"MLP facts/neuron", "single-name baseline", "steps", "seconds", "stopped because"},
		NumericCols: []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13}}
	for _, p := range r.Points {
		points.Rows = append(points.Rows, []string{fmt.Sprint(p.People), fmt.Sprint(p.Facts), fmt.Sprint(p.DMLP), fmt.Sprint(p.Neurons), fmt.Sprint(p.Params),
			pct(p.Accuracy), fmt.Sprint(p.Recalled), fmt.Sprint(p.Memorized), fmt.Sprintf("%.2f", p.FactsPerNeuron), pct(p.AblatedAccuracy),
			fmt.Sprintf("%.2f", p.MLPFactsPerNeuron), pct(p.Baseline), fmt.Sprint(p.Steps), fmt.Sprintf("%.1f", p.Seconds), p.StopReason})
	}
	caps := &report.Table{Caption: fmt.Sprintf("Capacity per MLP width at ≥%s recall", pct(c.Threshold)),
		Header: []string{"d_mlp", "neurons", "most facts at threshold", "facts per neuron", "most facts memorized (any recall)"}, NumericCols: []int{0, 1, 2, 3, 4}}
	for _, cp := range r.Capacities {
		caps.Rows = append(caps.Rows, []string{fmt.Sprint(cp.DMLP), fmt.Sprint(cp.Neurons), fmt.Sprint(cp.MaxFactsAtThreshold), fmt.Sprintf("%.2f", cp.FactsPerNeuron), fmt.Sprint(cp.MostMemorized)})
	}
	// One series per d_mlp over the sorted fact counts.
	var xs []float64
	for _, p := range r.Points {
		x := float64(p.Facts)
		found := false
		for _, v := range xs {
			found = found || v == x
		}
		if !found {
			xs = append(xs, x)
		}
	}
	recall := &report.Lines{Caption: "Recall against the number of facts, per MLP width", XLabel: "facts", YLabel: "recall (%)", X: xs}
	stored := &report.Lines{Caption: "Facts memorized (recall corrected for guessing) against facts trained, per MLP width; a width that stores every fact follows the diagonal",
		XLabel: "facts", YLabel: "facts memorized", X: xs}
	for _, cp := range r.Capacities {
		rs := report.Series{Name: fmt.Sprintf("d_mlp %d", cp.DMLP)}
		ss := report.Series{Name: rs.Name}
		for _, x := range xs {
			rv, sv := nan(), nan()
			for _, p := range r.Points {
				if p.DMLP == cp.DMLP && float64(p.Facts) == x {
					rv, sv = 100*p.Accuracy, float64(p.Memorized)
				}
			}
			rs.Y, ss.Y = append(rs.Y, rv), append(ss.Y, sv)
		}
		recall.Series = append(recall.Series, rs)
		stored.Series = append(stored.Series, ss)
	}
	return &report.Document{Title: "Toy capacity sweep", Provenance: prov,
		Blocks: []report.Block{&report.Paragraph{Text: r.Headline}, caps, recall, stored, points}}
}

func nan() float64 { return math.NaN() }

func (a *app) toyMechanismCommand() *cobra.Command {
	var opts toy.MechanismOptions
	var format, out string
	cmd := &cobra.Command{
		Use:   "mechanism DIR",
		Short: "How a toy model recalls its facts: AND-gate neurons, neurons per fact, facts per neuron",
		Long: `mechanism runs the conjunction (AND-gate) test of Fact Finding on every person of the world,
at the prompt's final token (where a 1-layer model must combine the names) and at the last name
token (where Fact Finding looks), and searches, for a sample of facts, the smallest set of
mean-ablated neurons that removes --fraction of the answer's logit lead over the strongest other
value. It compares the counts with computation in superposition: many ANDs per neuron, several
neurons per AND.`,
		Example: "  factlens toy mechanism runs/toy\n  factlens toy mechanism --relation city --format html --out mech.html runs/toy",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkFormat(format, "text", "json", "md", "html"); err != nil {
				return err
			}
			if opts.Fraction <= 0 || opts.Fraction > 1 {
				return usagef("--fraction %v: want (0, 1]", opts.Fraction)
			}
			fo, err := toy.Open(args[0])
			if err != nil {
				return err
			}
			defer fo.Close()
			res, err := toy.Analyze(cmd.Context(), fo, opts)
			if err != nil {
				return err
			}
			return writeOutput(a.stdout, out, func(w io.Writer) error {
				return renderResult(w, format, res, func() *report.Document {
					prov := append(worldProvenance(fo.World.Config), modelProvenance(fo.State.Model), report.Field{Key: "folder", Value: args[0]},
						report.Field{Key: "AND test", Value: fmt.Sprintf("mlp.hook_post, tau %g, min act %g, %d alternate names, seed %d", res.FinalToken.Tau, res.FinalToken.MinAct, res.FinalToken.Alternates, res.FinalToken.Seed)})
					t := &report.Table{Header: []string{"where", "AND neurons", "facts with an AND neuron", "AND pairs", "mean AND neurons per fact", "mean facts per AND neuron"},
						NumericCols: []int{1, 2, 3, 4, 5}}
					for _, row := range []struct {
						name string
						s    *analysis.ConjunctionSurvey
					}{{"final token", res.FinalToken}, {"last name token", res.LastName}} {
						t.Rows = append(t.Rows, []string{row.name, fmt.Sprint(row.s.ANDNeurons), fmt.Sprintf("%d of %d", row.s.FactsWithAND, len(row.s.Names)),
							fmt.Sprint(row.s.ANDPairs), fmt.Sprintf("%.2f", row.s.MeanNeuronsPerFact), fmt.Sprintf("%.2f", row.s.MeanFactsPerANDNeuron)})
					}
					hist := &report.Bars{Caption: "AND neurons at the final token by the number of facts they gate", XLabel: "facts", YLabel: "neurons"}
					for k, n := range res.FinalToken.FactsPerNeuronHistogram {
						if k > 0 {
							hist.Labels = append(hist.Labels, fmt.Sprint(k))
							hist.Values = append(hist.Values, float64(n))
						}
					}
					blocks := []report.Block{&report.Paragraph{Text: res.Verdict}, t, hist}
					if ab := res.Ablation; ab != nil && len(ab.Sizes) > 0 {
						sizes := &report.Bars{Caption: fmt.Sprintf("Neurons whose mean-ablation removes %.0f%% of the logit lead, per fact (%d sampled)", 100*ab.Fraction, ab.Facts),
							XLabel: "neurons", YLabel: "facts"}
						counts := make([]int, ab.MaxSize+1)
						for _, s := range ab.Sizes {
							counts[s]++
						}
						for k, n := range counts[1:] {
							sizes.Labels = append(sizes.Labels, fmt.Sprint(k+1))
							sizes.Values = append(sizes.Values, float64(n))
						}
						blocks = append(blocks, sizes)
					}
					return &report.Document{Title: fmt.Sprintf("Toy model mechanism: %s (%d facts, %d neurons)", res.Relation, res.Facts, res.Neurons),
						Provenance: prov, Blocks: blocks}
				})
			})
		},
	}
	cmd.Flags().StringVar(&opts.Relation, "relation", "", "relation to study (default: the world's first)")
	cmd.Flags().IntVar(&opts.Alternates, "alternates", 4, "other first and last names each name is paired with in the AND test")
	cmd.Flags().IntVar(&opts.Sample, "sample", 64, "facts whose minimal ablation sets are searched")
	cmd.Flags().Float64Var(&opts.Fraction, "fraction", 0.5, "fraction of the logit lead an ablation set must remove")
	cmd.Flags().Uint64Var(&opts.Seed, "seed", 1, "seed for alternate names and the fact sample")
	cmd.Flags().Float64Var(&opts.Tau, "tau", 0.5, "AND verdict: interaction ≥ tau·act and each one-name mean ≤ (1−tau)·act")
	cmd.Flags().Float64Var(&opts.MinAct, "min-act", 0.5, "AND verdict: activation on the true name a neuron needs to count as firing")
	cmd.Flags().StringVarP(&format, "format", "f", "text", "output format: text, json, md or html")
	cmd.Flags().StringVarP(&out, "out", "o", "", "write the report to this file instead of standard output")
	return cmd
}
