package toy

import (
	"context"
	"fmt"
	"math"
	"strings"

	"github.com/factlens/factlens/gpt2"
)

// Example is a fact as token ids: the prompt, and the answer the next token
// must be.
type Example struct {
	Tokens []int
	Answer int
	// First and Last are the positions of the name tokens in Tokens.
	First, Last int
}

// Encode tokenizes facts and checks that each word is a single token, so
// that the name positions and the answer are well defined.
func Encode(tok *gpt2.Tokenizer, facts []Fact) ([]Example, error) {
	out := make([]Example, len(facts))
	for i, f := range facts {
		ids := tok.Encode(f.Prompt)
		if want := len(strings.Fields(f.Prompt)); len(ids) != want {
			return nil, fmt.Errorf("toy: prompt %q is %d tokens, want one per word (%d): wrong vocabulary?", f.Prompt, len(ids), want)
		}
		ans := tok.Encode(f.Answer)
		if len(ans) != 1 {
			return nil, fmt.Errorf("toy: answer %q is %d tokens, want 1: wrong vocabulary?", f.Answer, len(ans))
		}
		out[i] = Example{Tokens: ids, Answer: ans[0], First: 0, Last: 1}
	}
	return out, nil
}

// FactOutcome is what the model says after one prompt.
type FactOutcome struct {
	Correct    bool    `json:"correct"`
	Predicted  int     `json:"predicted"`   // top-1 token id over the whole vocabulary
	AnswerProb float64 `json:"answer_prob"` // softmax probability of the answer
	Loss       float64 `json:"loss"`        // −log AnswerProb
}

// Recall summarises how many facts a model recalls: the answer is the
// top-1 token over the whole vocabulary.
type Recall struct {
	Facts          int           `json:"facts"`
	Correct        int           `json:"correct"`
	Accuracy       float64       `json:"accuracy"`
	MeanAnswerProb float64       `json:"mean_answer_prob"`
	MeanLoss       float64       `json:"mean_loss"`
	Outcomes       []FactOutcome `json:"-"`
}

// evalBatch bounds the rows of one forward pass during evaluation.
const evalBatch = 512

// Evaluate runs every example through the model's ordinary forward pass
// (gpt2.Model.Run, the one every factlens command uses) and scores the
// next-token prediction.
func Evaluate(ctx context.Context, m *gpt2.Model, examples []Example) (*Recall, error) {
	return evaluate(ctx, m, examples, nil)
}

// MLPAblatedRecall is Evaluate with every MLP neuron of every layer
// mean-ablated: mlp.hook_post replaced, at each position, by its mean over
// the examples of the same length. What the model still recalls then comes
// from the embeddings, attention and LayerNorms, not from any fact-specific
// MLP output.
func MLPAblatedRecall(ctx context.Context, m *gpt2.Model, examples []Example) (*Recall, error) {
	match := gpt2.HookGlob("blocks.*.mlp.hook_post")
	means := map[int]map[string]*gpt2.Activation{} // length → hook → [pos, d_mlp]
	counts := map[int]int{}
	for _, group := range groupByLength(examples, evalBatch) {
		rows := make([][]int, len(group))
		for i, idx := range group {
			rows[i] = examples[idx].Tokens
		}
		res, err := m.Run(ctx, rows, gpt2.RunOptions{Cache: match, Logits: gpt2.LogitsNone})
		if err != nil {
			return nil, fmt.Errorf("toy: MLP means: %w", err)
		}
		n := len(rows[0])
		if means[n] == nil {
			means[n] = map[string]*gpt2.Activation{}
		}
		for name, act := range res.Cache {
			sum := means[n][name]
			if sum == nil {
				sum = &gpt2.Activation{Name: name, Shape: act.Shape[1:], Data: make([]float32, len(act.Data)/act.Shape[0])}
				means[n][name] = sum
			}
			for b := range act.Shape[0] {
				for j, v := range act.At(b) {
					sum.Data[j] += v
				}
			}
		}
		counts[n] += len(rows)
	}
	for n, byName := range means {
		for _, a := range byName {
			for j := range a.Data {
				a.Data[j] /= float32(counts[n])
			}
		}
	}
	return evaluate(ctx, m, examples, func(n int) []gpt2.Hook {
		var hooks []gpt2.Hook
		for name, mean := range means[n] {
			hooks = append(hooks, gpt2.MeanAblate(gpt2.HookName(name), mean))
		}
		return hooks
	})
}

// evaluate scores examples, running hooksFor(prompt length) if set.
func evaluate(ctx context.Context, m *gpt2.Model, examples []Example, hooksFor func(n int) []gpt2.Hook) (*Recall, error) {
	r := &Recall{Facts: len(examples), Outcomes: make([]FactOutcome, len(examples))}
	for _, group := range groupByLength(examples, evalBatch) {
		rows := make([][]int, len(group))
		for i, idx := range group {
			rows[i] = examples[idx].Tokens
		}
		opts := gpt2.RunOptions{Logits: gpt2.LogitsLast}
		if hooksFor != nil {
			opts.Hooks = hooksFor(len(rows[0]))
		}
		res, err := m.Run(ctx, rows, opts)
		if err != nil {
			return nil, fmt.Errorf("toy: evaluate: %w", err)
		}
		v := m.VocabSize()
		for i, idx := range group {
			r.Outcomes[idx] = score(res.Logits.Data[i*v:(i+1)*v], examples[idx].Answer)
		}
	}
	for _, o := range r.Outcomes {
		if o.Correct {
			r.Correct++
		}
		r.MeanAnswerProb += o.AnswerProb
		r.MeanLoss += o.Loss
	}
	if n := float64(len(examples)); n > 0 {
		r.Accuracy = float64(r.Correct) / n
		r.MeanAnswerProb /= n
		r.MeanLoss /= n
	}
	return r, nil
}

// score computes the outcome of one logit row in float64.
func score(logits []float32, answer int) FactOutcome {
	best := 0
	for i, v := range logits {
		if v > logits[best] {
			best = i
		}
	}
	maxv := float64(logits[best])
	var z float64
	for _, v := range logits {
		z += math.Exp(float64(v) - maxv)
	}
	logp := float64(logits[answer]) - maxv - math.Log(z)
	return FactOutcome{Correct: best == answer, Predicted: best, AnswerProb: math.Exp(logp), Loss: -logp}
}

// groupByLength splits example indices into batches of equal token length
// (in order of first appearance of each length), each at most size long.
func groupByLength(examples []Example, size int) [][]int {
	byLen := map[int][]int{}
	var lengths []int
	for i, e := range examples {
		n := len(e.Tokens)
		if _, ok := byLen[n]; !ok {
			lengths = append(lengths, n)
		}
		byLen[n] = append(byLen[n], i)
	}
	var out [][]int
	for _, n := range lengths {
		idx := byLen[n]
		for len(idx) > 0 {
			k := min(size, len(idx))
			out = append(out, idx[:k])
			idx = idx[k:]
		}
	}
	return out
}
