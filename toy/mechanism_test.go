package toy

import (
	"context"
	"strings"
	"testing"

	"github.com/factlens/factlens/gpt2"
)

func openDemo(t *testing.T) *Folder {
	t.Helper()
	dir, err := DemoDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	f, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// TestMLPAblatedRecall checks MLPAblatedRecall against a hand-written
// ablation: in a 1-layer model only the final position's MLP output reaches
// the logits, so replacing hook_post at the final position alone by its mean
// over all prompts (accumulated here in float64) must give the same
// predictions as MLPAblatedRecall's per-position means at every position.
func TestMLPAblatedRecall(t *testing.T) {
	ctx := context.Background()
	f := openDemo(t)
	var facts []Fact
	for _, fact := range f.World.Facts() {
		if fact.Relation == "sport" {
			facts = append(facts, fact)
		}
	}
	ex, err := Encode(f.Tokenizer, facts)
	if err != nil {
		t.Fatal(err)
	}
	got, err := MLPAblatedRecall(ctx, f.Model, ex)
	if err != nil {
		t.Fatal(err)
	}
	rows := make([][]int, len(ex))
	for i, e := range ex {
		rows[i] = e.Tokens
	}
	const name = "blocks.0.mlp.hook_post"
	res, err := f.Model.Run(ctx, rows, gpt2.RunOptions{Cache: gpt2.HookName(name), Logits: gpt2.LogitsNone})
	if err != nil {
		t.Fatal(err)
	}
	act := res.Cache[name]
	last := act.Shape[1] - 1
	mean := make([]float64, act.Shape[2])
	for b := range rows {
		for j, v := range act.At(b, last) {
			mean[j] += float64(v) / float64(len(rows))
		}
	}
	hook := gpt2.Hook{Match: gpt2.HookName(name), Fn: func(a *gpt2.Activation) error {
		for b := 0; b < a.Shape[0]; b++ {
			row := a.At(b, last)
			for j := range row {
				row[j] = float32(mean[j])
			}
		}
		return nil
	}}
	res, err = f.Model.Run(ctx, rows, gpt2.RunOptions{Hooks: []gpt2.Hook{hook}, Logits: gpt2.LogitsLast})
	if err != nil {
		t.Fatal(err)
	}
	v := f.Model.VocabSize()
	correct := 0
	for i, e := range ex {
		o := score(res.Logits.Data[i*v:(i+1)*v], e.Answer)
		if o.Predicted != got.Outcomes[i].Predicted {
			t.Errorf("fact %d: predicted %d by hand, %d by MLPAblatedRecall", i, o.Predicted, got.Outcomes[i].Predicted)
		}
		if o.Correct {
			correct++
		}
	}
	if correct != got.Correct || got.Accuracy > 0.5 {
		t.Errorf("ablated recall %d by hand, %d (%.3f) by MLPAblatedRecall; the demo should need its MLP", correct, got.Correct, got.Accuracy)
	}
}

func TestAnalyzeDemo(t *testing.T) {
	f := openDemo(t)
	r, err := Analyze(context.Background(), f, MechanismOptions{Relation: "city", Sample: 6})
	if err != nil {
		t.Fatal(err)
	}
	if r.Relation != "city" || r.Facts != 512 || r.Neurons != 64 || r.FactsPerNeuron != 8 || r.Recall != 1 {
		t.Errorf("mechanism %+v", r)
	}
	for _, s := range []struct {
		name string
		n    int
	}{{"final", len(r.FinalToken.NeuronsPerFact)}, {"last name", len(r.LastName.NeuronsPerFact)}} {
		if s.n != 512 {
			t.Errorf("%s token survey covers %d facts", s.name, s.n)
		}
	}
	if r.FinalToken.ANDNeurons == 0 || r.FinalToken.Tested != 64 {
		t.Errorf("final token: %d AND neurons of %d tested", r.FinalToken.ANDNeurons, r.FinalToken.Tested)
	}
	a := r.Ablation
	if a.Facts != 6 || a.Reached != 6 || a.MeanSize < 1 || a.UsedNeurons < 1 {
		t.Errorf("ablation %+v", a)
	}
	if !strings.Contains(r.Verdict, "512 facts on 64 MLP neurons") {
		t.Errorf("verdict %q", r.Verdict)
	}
	if _, err := Analyze(context.Background(), f, MechanismOptions{Relation: "color"}); err == nil {
		t.Error("unknown relation: no error")
	}
}
