package weights

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Canonical parameter names are Hugging Face's GPT-2 names without the
// "transformer." prefix that GPT2LMHeadModel checkpoints carry. Weights of
// the Conv1D layers (c_attn, c_proj, c_fc) are stored [in, out], so a layer
// computes y = x·W + b with x a row vector.

// LMHeadName is the separate unembedding some checkpoints store; most GPT-2
// checkpoints tie it to wte.weight and leave it out.
const LMHeadName = "lm_head.weight"

// transformerPrefix is what GPT2LMHeadModel puts in front of every name but
// lm_head.weight.
const transformerPrefix = "transformer."

// ParamSpec is the canonical name of one parameter and the shape the config
// requires of it.
type ParamSpec struct {
	Name  string
	Shape []int
}

// ParamSpecs lists every parameter a GPT-2 with this config has, in model
// order (wte, wpe, then each block, then ln_f). lm_head.weight is not listed:
// it is optional when the embeddings are tied (see Checkpoint.Unembedding).
func (c *Config) ParamSpecs() []ParamSpec {
	d, mlp := c.NEmbd, c.DInner()
	specs := []ParamSpec{
		{"wte.weight", []int{c.VocabSize, d}},
		{"wpe.weight", []int{c.NPositions, d}},
	}
	for i := 0; i < c.NLayer; i++ {
		p := "h." + strconv.Itoa(i) + "."
		specs = append(specs,
			ParamSpec{p + "ln_1.weight", []int{d}},
			ParamSpec{p + "ln_1.bias", []int{d}},
			ParamSpec{p + "attn.c_attn.weight", []int{d, 3 * d}},
			ParamSpec{p + "attn.c_attn.bias", []int{3 * d}},
			ParamSpec{p + "attn.c_proj.weight", []int{d, d}},
			ParamSpec{p + "attn.c_proj.bias", []int{d}},
			ParamSpec{p + "ln_2.weight", []int{d}},
			ParamSpec{p + "ln_2.bias", []int{d}},
			ParamSpec{p + "mlp.c_fc.weight", []int{d, mlp}},
			ParamSpec{p + "mlp.c_fc.bias", []int{mlp}},
			ParamSpec{p + "mlp.c_proj.weight", []int{mlp, d}},
			ParamSpec{p + "mlp.c_proj.bias", []int{d}},
		)
	}
	return append(specs,
		ParamSpec{"ln_f.weight", []int{d}},
		ParamSpec{"ln_f.bias", []int{d}},
	)
}

// lmHeadSpec is the shape of an untied unembedding.
func (c *Config) lmHeadSpec() ParamSpec {
	return ParamSpec{LMHeadName, []int{c.VocabSize, c.NEmbd}}
}

// canonicalName strips the "transformer." prefix.
func canonicalName(key string) string {
	return strings.TrimPrefix(key, transformerPrefix)
}

// isAttnBuffer reports whether name is one of the causal-mask buffers
// (h.N.attn.bias, h.N.attn.masked_bias) that older PyTorch checkpoints saved
// with the weights. They carry no learned values and are skipped.
func isAttnBuffer(name string, nLayer int) bool {
	rest, ok := strings.CutPrefix(name, "h.")
	if !ok {
		return false
	}
	num, tail, ok := strings.Cut(rest, ".")
	if !ok || (tail != "attn.bias" && tail != "attn.masked_bias") {
		return false
	}
	i, err := strconv.Atoi(num)
	return err == nil && i >= 0 && i < nLayer && strconv.Itoa(i) == num
}

// MismatchError lists everything wrong between a set of tensors and what the
// config requires, so that one run shows all problems.
type MismatchError struct {
	Where      string   // checkpoint path, or "save" for SaveCheckpoint
	Missing    []string // canonical names the config needs but the tensors lack
	Unexpected []string // tensor names that are neither parameters nor known buffers
	Problems   []string // shape, dtype and duplicate problems, each naming its tensor
}

func (e *MismatchError) empty() bool {
	return len(e.Missing) == 0 && len(e.Unexpected) == 0 && len(e.Problems) == 0
}

func (e *MismatchError) Error() string {
	parts := append([]string(nil), e.Problems...)
	if len(e.Missing) > 0 {
		parts = append(parts, fmt.Sprintf("%d missing tensor(s): %s", len(e.Missing), strings.Join(e.Missing, ", ")))
	}
	if len(e.Unexpected) > 0 {
		parts = append(parts, fmt.Sprintf("%d unexpected tensor(s): %s", len(e.Unexpected), strings.Join(e.Unexpected, ", ")))
	}
	return "weights: " + strings.Join(parts, "; ") + " (" + e.Where + ")"
}

func shapeProblem(name string, got, want []int) string {
	return fmt.Sprintf("%s: shape %v, config wants %v", name, got, want)
}

func sameShape(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// checkNames compares the canonical names and shapes in have against the
// config's parameters. It fills Missing, Unexpected and shape Problems of e
// and returns the specs that matched, in model order (lm_head last if present).
func checkNames(cfg *Config, have map[string][]int, e *MismatchError) []ParamSpec {
	specs := cfg.ParamSpecs()
	if _, ok := have[LMHeadName]; ok || !cfg.TiedEmbeddings() {
		specs = append(specs, cfg.lmHeadSpec())
	}
	want := make(map[string]bool, len(specs))
	var matched []ParamSpec
	for _, s := range specs {
		want[s.Name] = true
		shape, ok := have[s.Name]
		switch {
		case !ok:
			e.Missing = append(e.Missing, s.Name)
		case !sameShape(shape, s.Shape):
			e.Problems = append(e.Problems, shapeProblem(s.Name, shape, s.Shape))
		default:
			matched = append(matched, s)
		}
	}
	var unexpected []string
	for name := range have {
		if !want[name] {
			unexpected = append(unexpected, name)
		}
	}
	sort.Strings(unexpected)
	e.Unexpected = append(e.Unexpected, unexpected...)
	return matched
}
