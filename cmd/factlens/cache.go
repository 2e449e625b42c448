package main

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/factlens/factlens/gpt2"
	"github.com/factlens/factlens/weights"
)

func (a *app) cacheCommand() *cobra.Command {
	var rf runFlags
	var idsFlag, hooks, out, dtype string
	cmd := &cobra.Command{
		Use:   "cache (TEXT | --ids 1,2,3) --out FILE.safetensors",
		Short: "Save activations by TransformerLens hook name to a safetensors file",
		Long: `cache runs one prompt and writes the hook points selected by --hooks (a name or a glob;
default every hook point) as tensors named by their TransformerLens names, with the batch
dimension ([1, pos, ...]), plus "logits" [1, pos, vocab]. The file's __metadata__ records the
model, revision, commit, weight processing and token ids. Python reads it as-is:
safetensors.numpy.load_file("acts.safetensors")["blocks.5.mlp.hook_post"].`,
		Example: "  factlens cache --out acts.safetensors \"Michael Jordan plays the sport of\"\n" +
			"  factlens cache --hooks 'blocks.*.mlp.hook_post' --ids 13256,8078 --out mlp.safetensors",
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return usagef("--out FILE.safetensors is required")
			}
			if (len(args) == 1) == (idsFlag != "") {
				return usagef("give either TEXT or --ids, not both and not neither")
			}
			match, err := gpt2.CompileHookGlob(hooks)
			if err != nil {
				return usagef("--hooks: %v", err)
			}
			lm, err := a.loadModel(cmd.Context(), &rf)
			if err != nil {
				return err
			}
			defer lm.Close()
			if err := checkHookPattern(lm.model, hooks, match); err != nil {
				return err
			}
			var ids []int
			if idsFlag != "" {
				if ids, err = parseIDs(idsFlag); err != nil {
					return err
				}
				err = lm.checkIDs(ids)
			} else {
				var text string
				if text, err = a.readTextArg(args[0]); err == nil {
					ids, err = lm.encodePrompt(text)
				}
			}
			if err != nil {
				return err
			}
			res, err := lm.model.Run(cmd.Context(), [][]int{ids}, gpt2.RunOptions{Cache: match, PrependBOS: lm.prependBOS})
			if err != nil {
				return err
			}
			tensors := make([]weights.Tensor, 0, len(res.Cache)+1)
			for _, name := range lm.model.HookNames() {
				if act, ok := res.Cache[name]; ok {
					tensors = append(tensors, weights.Tensor{Name: name, Shape: act.Shape, Data: act.Data})
				}
			}
			tensors = append(tensors, weights.Tensor{Name: "logits", Shape: res.Logits.Shape, Data: res.Logits.Data})
			idsJSON, _ := json.Marshal(res.Tokens[0])
			src := lm.ck.Source
			meta := map[string]string{
				"format":            "factlens-activations",
				"model":             src.Ref,
				"repository":        src.Repo,
				"revision":          src.Revision,
				"commit":            src.Commit,
				"weight_processing": lm.model.Processing.String(),
				"prepend_bos":       strconv.FormatBool(lm.prependBOS),
				"token_ids":         string(idsJSON),
			}
			if err := weights.WriteSafetensors(out, tensors, meta, weights.WithDType(dtype)); err != nil {
				return err
			}
			if !a.quiet {
				fmt.Fprintf(a.stderr, "factlens: wrote %d tensors for %d tokens to %s\n", len(tensors), len(ids), out)
			}
			return nil
		},
	}
	rf.register(cmd)
	cmd.Flags().StringVar(&idsFlag, "ids", "", "comma-separated token ids instead of TEXT")
	cmd.Flags().StringVar(&hooks, "hooks", "*", "hook name or glob (path.Match syntax), e.g. 'blocks.*.mlp.hook_post'")
	cmd.Flags().StringVarP(&out, "out", "o", "", "output .safetensors file (required)")
	cmd.Flags().StringVar(&dtype, "dtype", "F32", "stored dtype: F32, F16 or BF16")
	return cmd
}

// checkHookPattern fails when a hook selection matches nothing, suggesting
// the nearest hook name for a plain name.
func checkHookPattern(m *gpt2.Model, pattern string, match gpt2.Matcher) error {
	for _, name := range m.HookNames() {
		if match(name) {
			return nil
		}
	}
	if !strings.ContainsAny(pattern, "*?[") {
		return m.CheckHookName(pattern)
	}
	return fmt.Errorf("--hooks %q matches no hook point of this model", pattern)
}

// parseIDs reads "1,2,3" into token ids.
func parseIDs(s string) ([]int, error) {
	var ids []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		id, err := strconv.Atoi(f)
		if err != nil {
			return nil, usagef("--ids: %q is not a token id", f)
		}
		ids = append(ids, id)
	}
	return ids, nil
}
