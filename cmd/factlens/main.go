// Command factlens runs GPT-2 interpretability jobs from the command line:
// download and inspect checkpoints; tokenize, run, generate and cache
// activations by their TransformerLens hook names; activation reports;
// fact attribution (dla, trace, patch, neurons, conjunction, probe); sparse
// autoencoders (sae train, eval, features); toy fact-memorization models
// (toy); the published fact-recall studies (reproduce); and an offline demo.
//
// Exit status: 0 on success, 1 on a usage error (the usage is shown), 2 on a
// failure (one line naming the cause).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Getenv))
}

// run executes one factlens invocation and returns its exit status; main is
// only this plus os.Exit so that tests can drive every command in-process.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	app := &app{stdin: stdin, stdout: stdout, stderr: stderr, getenv: getenv}
	root := app.rootCommand()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return 0
	}
	var uerr *usageError
	if errors.As(err, &uerr) || isCobraUsageError(err) {
		fmt.Fprintf(stderr, "factlens: %v\n\n", err)
		if cmd != nil {
			fmt.Fprint(stderr, cmd.UsageString())
		}
		return 1
	}
	if errors.Is(err, context.Canceled) {
		fmt.Fprintln(stderr, "factlens: interrupted")
		return 2
	}
	fmt.Fprintf(stderr, "factlens: %v\n", err)
	return 2
}
