package main

import (
	"bytes"
	"fmt"
	"html"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/factlens/factlens/toy"
)

// demoStep is one factlens invocation of the demo pipeline and the report it
// writes.
type demoStep struct {
	title string
	file  string // report file in the output folder; "" prints to stdout
	args  []string
}

func (a *app) demoCommand() *cobra.Command {
	var out, cacheDir, person string
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run the whole pipeline offline on the shipped toy fact-memorization model",
		Long: `demo needs no network and no downloaded weights. It unpacks the toy model that ships inside
factlens (GPT-2's architecture with 1 layer, d_model 32 and 64 MLP neurons, trained to recall the
sport and city of 512 people: 1,024 facts, 16 per neuron) and runs on one of its facts:
the next-token prediction, the activation report, direct logit attribution, the AND-gate
conjunction test of the person's name, the mechanism survey over every fact, and a sparse
autoencoder trained on the fly whose active features per token are counted. Every report is an
HTML file in --out, listed in index.html.`,
		Example: "  factlens demo\n  factlens demo --out demo --person \"Steve Adams\"",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if cacheDir == "" {
				cacheDir = a.defaultCacheDir()
			}
			model, err := toy.DemoDir(cacheDir)
			if err != nil {
				return err
			}
			fo, err := toy.Open(model)
			if err != nil {
				return err
			}
			world := fo.World
			fo.Close()
			var fact *toy.Fact
			for _, f := range world.Facts() {
				if f.Relation == "sport" && (person == "" || f.First+" "+f.Last == person) {
					fact = &f
					break
				}
			}
			if fact == nil {
				return usagef("--person %q is not one of the toy world's %d people (see %s/world.json)", person, len(world.People), model)
			}
			contrast := ""
			for _, r := range world.Relations {
				if r.Name == "sport" {
					for _, v := range r.Values {
						if " "+strings.TrimSpace(v) != fact.Answer {
							contrast = " " + strings.TrimSpace(v)
							break
						}
					}
				}
			}
			if err := os.MkdirAll(out, 0o755); err != nil {
				return err
			}
			corpus := filepath.Join(out, "facts-corpus.txt")
			var text strings.Builder
			for _, f := range world.Facts() {
				text.WriteString(f.Prompt + f.Answer + ".\n")
			}
			if err := writeOutput(nil, corpus, func(w io.Writer) error { _, err := w.Write([]byte(text.String())); return err }); err != nil {
				return err
			}
			name := fact.First + " " + fact.Last
			others := func(pool []string, not string) string {
				var picked []string
				for _, p := range pool {
					if p != not && len(picked) < 6 {
						picked = append(picked, p)
					}
				}
				return strings.Join(picked, ",")
			}
			sae := filepath.Join(out, "sae")
			os.RemoveAll(sae) // the demo trains a fresh one each run
			steps := []demoStep{
				{"Next-token prediction", "", []string{"run", "--model", model, "--top", "4", fact.Prompt}},
				{"Activation report", "activations.html", []string{"activations", "--model", model, fact.Prompt}},
				{"Direct logit attribution", "dla.html", []string{"dla", "--model", model, "--target", fact.Answer, "--contrast", contrast, fact.Prompt}},
				{"AND-gate test of the name", "conjunction.html", []string{"conjunction", "--model", model, "--name", name,
					"--template", strings.Replace(fact.Prompt, name, "{}", 1), "--target", fact.Answer,
					"--other-firsts", others(world.FirstNames, fact.First), "--other-lasts", others(world.LastNames, fact.Last)}},
				{"Mechanism over every fact", "mechanism.html", []string{"toy", "mechanism", "--sample", "16", model}},
				{"Sparse autoencoder training", "sae-train.html", []string{"sae", "train", "--model", model, "--hook", "blocks.0.hook_resid_post",
					"--corpus", corpus, "--out", sae, "--arch", "standard", "--l1", "3", "--l1-warmup", "200", "--lr", "1e-3", "--d-sae", "256", "--batch", "512", "--context", "16",
					"--tokens", "1000000", "--buffer", "4096", "--seed", "1"}},
				{"Active SAE features per token", "sae-features.html", []string{"sae", "features", "--model", model, "--sae", sae, fact.Prompt}},
			}
			var index strings.Builder
			fmt.Fprintf(&index, "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>factlens demo</title></head><body style=\"font-family:system-ui,sans-serif;max-width:900px;margin:2em auto\">\n<h1>factlens demo</h1>\n<p>Toy model %s; fact: %s → %s.</p>\n<ol>\n",
				html.EscapeString(model), html.EscapeString(fact.Prompt), html.EscapeString(fact.Answer))
			for _, s := range steps {
				args := s.args
				if s.file != "" {
					args = append(append([]string{}, args...), "--format", "html", flagForOut(s.args), filepath.Join(out, s.file))
				}
				if !a.quiet {
					fmt.Fprintf(a.stderr, "factlens demo: %s\n", s.title)
				}
				var stdout bytes.Buffer
				sub := &app{stdin: a.stdin, stdout: &stdout, stderr: a.stderr, getenv: a.getenv, quiet: true, verbose: a.verbose}
				root := sub.rootCommand()
				root.SetArgs(args)
				root.SetOut(&stdout)
				root.SetErr(a.stderr)
				if err := root.ExecuteContext(cmd.Context()); err != nil {
					return fmt.Errorf("demo step %q (factlens %s): %w", s.title, strings.Join(args, " "), err)
				}
				if s.file == "" {
					fmt.Fprintf(a.stdout, "== %s\n%s\n", s.title, stdout.String())
					continue
				}
				fmt.Fprintf(a.stdout, "== %s: %s\n", s.title, filepath.Join(out, s.file))
				fmt.Fprintf(&index, "<li><a href=\"%s\">%s</a></li>\n", html.EscapeString(s.file), html.EscapeString(s.title))
			}
			index.WriteString("</ol></body></html>\n")
			indexPath := filepath.Join(out, "index.html")
			if err := writeOutput(nil, indexPath, func(w io.Writer) error { _, err := w.Write([]byte(index.String())); return err }); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "== Reports: %s\n", indexPath)
			return nil
		},
	}
	cmd.Flags().StringVarP(&out, "out", "o", "factlens-demo", "folder for the reports")
	cmd.Flags().StringVar(&cacheDir, "cache-dir", "", "where the demo model is unpacked (default $XDG_CACHE_HOME/factlens or ~/.cache/factlens)")
	cmd.Flags().StringVar(&person, "person", "", "the person whose sport fact is analysed, \"First Last\" (default: the first person)")
	return cmd
}

// flagForOut is the flag naming a step's report file: sae train uses --out
// for its SAE folder and --report for the report.
func flagForOut(args []string) string {
	if len(args) > 1 && args[0] == "sae" && args[1] == "train" {
		return "--report"
	}
	return "--out"
}

// defaultCacheDir is $XDG_CACHE_HOME/factlens, else ~/.cache/factlens.
func (a *app) defaultCacheDir() string {
	if d := a.getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "factlens")
	}
	if h := a.getenv("HOME"); h != "" {
		return filepath.Join(h, ".cache", "factlens")
	}
	return filepath.Join(os.TempDir(), "factlens")
}
