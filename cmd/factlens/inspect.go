package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/factlens/factlens/cmd/factlens/report"
	"github.com/factlens/factlens/weights"
)

func (a *app) downloadCommand() *cobra.Command {
	var revision string
	cmd := &cobra.Command{
		Use:   "download MODEL",
		Short: "Fill the Hugging Face cache with a model's config, weights and tokenizer",
		Long: `download fetches config.json, the safetensors weights (one file or every shard) and the
tokenizer files of MODEL into the Hugging Face cache (HF_HOME / HF_HUB_CACHE, shared with
Python's huggingface_hub) and prints the snapshot folder. HF_TOKEN authenticates gated
repositories; HF_ENDPOINT selects another Hub.`,
		Example: "  factlens download gpt2\n  factlens download openai-community/gpt2-medium --revision main",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			src, err := weights.Resolve(cmd.Context(), a.hub(), args[0], revision)
			if err != nil {
				return err
			}
			if src.Commit != "" {
				fmt.Fprintf(a.stdout, "%s@%s\n", src.Repo, src.Commit)
			}
			fmt.Fprintln(a.stdout, src.Dir)
			return nil
		},
	}
	cmd.Flags().StringVar(&revision, "revision", "", "branch, tag or commit sha (default main)")
	return cmd
}

// inspectResult is what `factlens inspect --format json` prints.
type inspectResult struct {
	Source     weights.Source  `json:"source"`
	Config     *weights.Config `json:"config"`
	Parameters int64           `json:"parameters"`
	Bytes      int64           `json:"bytes"`
	Tensors    []tensorRow     `json:"tensors"`
}

type tensorRow struct {
	Name  string `json:"name"`
	DType string `json:"dtype"`
	Shape []int  `json:"shape"`
	Bytes int64  `json:"bytes"`
}

func (a *app) inspectCommand() *cobra.Command {
	var mf modelFlags
	var format string
	cmd := &cobra.Command{
		Use:   "inspect",
		Short: "Print a checkpoint's config, parameter count and tensors",
		Example: "  factlens inspect --model gpt2\n" +
			"  factlens inspect --model ./my-finetune --format json",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkFormat(format, "text", "json", "md", "html"); err != nil {
				return err
			}
			ck, err := a.openCheckpoint(cmd.Context(), &mf)
			if err != nil {
				return err
			}
			defer ck.Close()
			res := inspectResult{Source: ck.Source, Config: ck.Config}
			for _, spec := range ck.Config.ParamSpecs() {
				p, ok := ck.Params[spec.Name]
				if !ok {
					continue // lm_head.weight of a tied checkpoint
				}
				n := int64(1)
				for _, d := range p.Shape {
					n *= int64(d)
				}
				row := tensorRow{Name: p.Name, DType: p.StoredDType, Shape: p.Shape, Bytes: n * dtypeSize(p.StoredDType)}
				res.Parameters += n
				res.Bytes += row.Bytes
				res.Tensors = append(res.Tensors, row)
			}
			return renderResult(a.stdout, format, res, func() *report.Document { return inspectDocument(&res) })
		},
	}
	mf.register(cmd)
	cmd.Flags().StringVarP(&format, "format", "f", "text", "output format: text, json, md or html")
	return cmd
}

func dtypeSize(dtype string) int64 {
	switch dtype {
	case "F16", "BF16":
		return 2
	case "F64":
		return 8
	}
	return 4
}

func inspectDocument(r *inspectResult) *report.Document {
	c := r.Config
	doc := &report.Document{
		Title:      "Checkpoint " + r.Source.Ref,
		Provenance: sourceFields(r.Source),
	}
	unembed := "tied to wte"
	if !c.TiedEmbeddings() {
		unembed = "lm_head.weight"
	}
	doc.Blocks = append(doc.Blocks,
		&report.Heading{Level: 2, Text: "Config"},
		&report.Table{Header: []string{"field", "value"}, Rows: [][]string{
			{"n_layer", fmt.Sprint(c.NLayer)}, {"n_embd", fmt.Sprint(c.NEmbd)}, {"n_head", fmt.Sprint(c.NHead)},
			{"d_head", fmt.Sprint(c.DHead())}, {"d_mlp", fmt.Sprint(c.DInner())}, {"n_positions", fmt.Sprint(c.NPositions)},
			{"vocab_size", fmt.Sprint(c.VocabSize)}, {"activation_function", c.ActivationFunction},
			{"layer_norm_epsilon", fmt.Sprint(c.LayerNormEpsilon)}, {"unembedding", unembed},
			{"parameters", fmt.Sprint(r.Parameters)}, {"bytes", fmt.Sprint(r.Bytes)},
		}},
		&report.Heading{Level: 2, Text: "Tensors"},
	)
	t := &report.Table{Header: []string{"name", "dtype", "shape", "bytes"}, NumericCols: []int{3}}
	for _, row := range r.Tensors {
		t.Rows = append(t.Rows, []string{row.Name, row.DType, fmt.Sprint(row.Shape), fmt.Sprint(row.Bytes)})
	}
	doc.Blocks = append(doc.Blocks, t)
	return doc
}

// sourceFields lists where a checkpoint came from, for report provenance.
func sourceFields(s weights.Source) []report.Field {
	fields := []report.Field{{Key: "model", Value: s.Ref}}
	if s.Repo != "" {
		rev := s.Revision
		if rev == "" {
			rev = "main"
		}
		fields = append(fields, report.Field{Key: "repository", Value: s.Repo},
			report.Field{Key: "revision", Value: rev}, report.Field{Key: "commit", Value: s.Commit})
	} else {
		fields = append(fields, report.Field{Key: "folder", Value: s.Dir})
	}
	return fields
}
