package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

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
