package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/factlens/factlens/cmd/factlens/report"
	"github.com/factlens/factlens/gpt2"
	"github.com/factlens/factlens/weights"
)

// modelFlags are the flags of every command that loads a checkpoint.
type modelFlags struct {
	model    string
	revision string
}

func (f *modelFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVarP(&f.model, "model", "m", "gpt2",
		"Hub model id (gpt2, gpt2-medium, gpt2-large, gpt2-xl, distilgpt2, org/name), a folder, or a .safetensors file")
	cmd.Flags().StringVar(&f.revision, "revision", "", "Hub branch, tag or commit sha (default main)")
}

func (a *app) hub() *weights.Hub {
	h := weights.HubFromEnv(a.getenv)
	h.Progress = a.progressFor()
	return h
}

// openCheckpoint resolves --model (downloading it if needed) and opens it.
func (a *app) openCheckpoint(ctx context.Context, f *modelFlags) (*weights.Checkpoint, error) {
	start := time.Now()
	ck, err := weights.Open(ctx, a.hub(), f.model, f.revision)
	if err != nil {
		return nil, err
	}
	a.timing("open checkpoint", start)
	return ck, nil
}

// timing prints how long a step took when --verbose is on.
func (a *app) timing(what string, start time.Time) {
	if a.verbose {
		fmt.Fprintf(a.stderr, "factlens: %s: %v\n", what, time.Since(start).Round(time.Microsecond))
	}
}

// loadedModel is a model with its tokenizer and the choices that shape every
// number it produces.
type loadedModel struct {
	ck         *weights.Checkpoint
	model      *gpt2.Model
	tok        *gpt2.Tokenizer
	prependBOS bool
}

func (lm *loadedModel) Close() error { return lm.ck.Close() }

// runFlags adds weight processing and BOS choices to modelFlags.
type runFlags struct {
	modelFlags
	processing string
	prependBOS bool
}

func (f *runFlags) register(cmd *cobra.Command) {
	f.modelFlags.register(cmd)
	cmd.Flags().StringVar(&f.processing, "processing", "hf",
		"weight processing: hf (raw Hugging Face, as GPT2LMHeadModel) or tl (TransformerLens from_pretrained: fold_ln, center_writing_weights, center_unembed, fold_value_biases)")
	cmd.Flags().BoolVar(&f.prependBOS, "prepend-bos", false, "put <|endoftext|> before the prompt (TransformerLens' default; Hugging Face does not)")
}

func (f *runFlags) parseProcessing() (gpt2.Processing, error) {
	switch f.processing {
	case "hf", "raw", "":
		return gpt2.Processing{}, nil
	case "tl", "transformerlens":
		return gpt2.TransformerLensProcessing(), nil
	}
	return gpt2.Processing{}, usagef("unknown --processing %q (want hf or tl)", f.processing)
}

// loadModel opens --model and its tokenizer and builds the forward.
func (a *app) loadModel(ctx context.Context, f *runFlags) (*loadedModel, error) {
	proc, err := f.parseProcessing()
	if err != nil {
		return nil, err
	}
	ck, err := a.openCheckpoint(ctx, &f.modelFlags)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	m, err := gpt2.FromCheckpoint(ck, proc)
	if err != nil {
		ck.Close()
		return nil, err
	}
	tok, err := gpt2.LoadTokenizer(ck.Source.Dir)
	if err != nil {
		ck.Close()
		return nil, err
	}
	if tok.VocabSize() > m.VocabSize() {
		ck.Close()
		return nil, fmt.Errorf("tokenizer in %s has %d tokens but the model only %d", ck.Source.Dir, tok.VocabSize(), m.VocabSize())
	}
	a.timing("build model", start)
	return &loadedModel{ck: ck, model: m, tok: tok, prependBOS: f.prependBOS}, nil
}

// encodePrompt tokenizes a prompt and checks it fits the model.
func (lm *loadedModel) encodePrompt(text string) ([]int, error) {
	ids := lm.tok.Encode(text)
	return ids, lm.checkIDs(ids)
}

func (lm *loadedModel) checkIDs(ids []int) error {
	n := len(ids)
	if lm.prependBOS {
		n++
	}
	if len(ids) == 0 {
		return usagef("empty prompt: there is nothing to run")
	}
	if n > lm.model.NCtx() {
		return fmt.Errorf("prompt is %d tokens long; %s takes at most %d", n, lm.ck.Source.Ref, lm.model.NCtx())
	}
	for i, id := range ids {
		if id < 0 || id >= lm.model.VocabSize() {
			return usagef("token id %d at position %d is outside the vocabulary (0..%d)", id, i, lm.model.VocabSize()-1)
		}
	}
	return nil
}

// provenance lists model, revision and weight processing for reports.
func (lm *loadedModel) provenance() []report.Field {
	fields := sourceFields(lm.ck.Source)
	fields = append(fields, report.Field{Key: "weights", Value: lm.model.Processing.String()})
	bos := "no"
	if lm.prependBOS {
		bos = "yes"
	}
	return append(fields, report.Field{Key: "prepend BOS", Value: bos})
}

// tokenStrings returns the token text of each id, BOS included when prepended.
func (lm *loadedModel) tokenStrings(ids []int) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = lm.tok.Token(id)
	}
	return out
}

// readTextArg returns the prompt argument, reading standard input for "-"
// so that leading and trailing whitespace and newlines survive.
func (a *app) readTextArg(arg string) (string, error) {
	if arg != "-" {
		return arg, nil
	}
	b, err := io.ReadAll(a.stdin)
	if err != nil {
		return "", fmt.Errorf("reading standard input: %w", err)
	}
	return string(b), nil
}

// loadPrompt reads a TEXT argument ("-" is standard input), loads the model
// and tokenizes the text, checking it fits. The caller closes lm.
func (a *app) loadPrompt(ctx context.Context, f *runFlags, arg string) (lm *loadedModel, text string, ids []int, err error) {
	if text, err = a.readTextArg(arg); err != nil {
		return nil, "", nil, err
	}
	if lm, err = a.loadModel(ctx, f); err != nil {
		return nil, "", nil, err
	}
	if ids, err = lm.encodePrompt(text); err != nil {
		lm.Close()
		return nil, "", nil, err
	}
	return lm, text, ids, nil
}
