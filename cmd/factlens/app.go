package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
)

// app carries what every command shares: the streams, the environment and
// the flags common to all commands. Nothing here is global, so tests can run
// many invocations side by side.
type app struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string

	quiet   bool
	verbose bool
}

// usageError marks a mistake in how factlens was called (exit status 1 with
// the usage), as opposed to a failure while doing the work (exit status 2).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// isCobraUsageError recognises cobra's own argument and flag errors, which it
// returns as plain errors.
func isCobraUsageError(err error) bool {
	msg := err.Error()
	for _, prefix := range []string{"unknown command", "unknown flag", "unknown shorthand flag",
		"accepts ", "requires at least", "requires at most", "invalid argument", "flag needs an argument",
		"required flag", "if any flags in the group"} {
		if strings.HasPrefix(msg, prefix) {
			return true
		}
	}
	return false
}

func (a *app) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "factlens",
		Short: "Mechanistic interpretability of GPT-2 over its real weights",
		Long: `factlens loads GPT-2 checkpoints (Hugging Face Hub ids or local folders), runs prompts,
captures and patches activations by their TransformerLens hook names, and writes reports.`,
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	root.PersistentFlags().BoolVarP(&a.quiet, "quiet", "q", false, "no progress bars or notes on standard error")
	root.PersistentFlags().BoolVarP(&a.verbose, "verbose", "v", false, "print timings on standard error")
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return &usageError{msg: err.Error()} })
	for _, add := range a.commands() {
		root.AddCommand(add())
	}
	return root
}

// commands lists the constructors of every subcommand.
func (a *app) commands() []func() *cobra.Command {
	return []func() *cobra.Command{
		a.downloadCommand,
		a.inspectCommand,
		a.tokenizeCommand,
		a.runCommand,
		a.cacheCommand,
		a.toyCommand,
		a.demoCommand,
		a.activationsCommand,
		a.dlaCommand,
		a.traceCommand,
		a.patchCommand,
		a.neuronsCommand,
		a.conjunctionCommand,
		a.probeCommand,
		a.saeCommand,
		a.reproduceCommand,
	}
}
