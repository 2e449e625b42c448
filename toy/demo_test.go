package toy

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"reflect"
	"slices"
	"testing"

	"github.com/factlens/factlens/gpt2"
	"github.com/factlens/factlens/weights"
)

// TestDemoRecallsItsFacts loads the shipped demo model exactly as
// `factlens ... --model DIR` does (weights.Open on a folder, raw
// processing, the folder's tokenizer) and compares its answers with a
// float64 numpy GPT-2 forward of the same files
// (testdata/demo_reference/make_golden.py): same token ids, same top-1
// token for every fact, answer probabilities within 1e-4, and every fact
// recalled.
func TestDemoRecallsItsFacts(t *testing.T) {
	ctx := context.Background()
	dir, err := DemoDir(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ck, err := weights.Open(ctx, nil, dir, "")
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	m, err := gpt2.FromCheckpoint(ck, gpt2.Processing{})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := gpt2.LoadTokenizer(ck.Source.Dir)
	if err != nil {
		t.Fatal(err)
	}
	w, err := ReadWorld(dir + "/" + WorldFile)
	if err != nil {
		t.Fatal(err)
	}
	ex, err := Encode(tok, w.Facts())
	if err != nil {
		t.Fatal(err)
	}
	rec, err := Evaluate(ctx, m, ex)
	if err != nil {
		t.Fatal(err)
	}

	b, err := os.ReadFile("testdata/demo_reference/golden.json")
	if err != nil {
		t.Fatal(err)
	}
	var golden struct {
		Facts []struct {
			Prompt     string  `json:"prompt"`
			IDs        []int   `json:"ids"`
			Answer     int     `json:"answer"`
			Top1       int     `json:"top1"`
			AnswerProb float64 `json:"answer_prob"`
		} `json:"facts"`
		Correct int `json:"correct"`
	}
	if err := json.Unmarshal(b, &golden); err != nil {
		t.Fatal(err)
	}
	if len(golden.Facts) != len(ex) {
		t.Fatalf("%d golden facts, %d facts", len(golden.Facts), len(ex))
	}
	var worst float64
	for i, g := range golden.Facts {
		o := rec.Outcomes[i]
		if !slices.Equal(ex[i].Tokens, g.IDs) || ex[i].Answer != g.Answer {
			t.Fatalf("fact %d %q: ids %v → %d, reference %v → %d", i, g.Prompt, ex[i].Tokens, ex[i].Answer, g.IDs, g.Answer)
		}
		if o.Predicted != g.Top1 {
			t.Errorf("fact %d %q: top-1 %d, reference %d", i, g.Prompt, o.Predicted, g.Top1)
		}
		worst = math.Max(worst, math.Abs(o.AnswerProb-g.AnswerProb))
	}
	if worst > 1e-4 {
		t.Errorf("answer probabilities differ from the reference by up to %.2g", worst)
	}
	if rec.Correct != len(ex) || golden.Correct != len(ex) {
		t.Errorf("demo recalls %d (reference %d) of %d facts", rec.Correct, golden.Correct, len(ex))
	}
	t.Logf("demo: %d/%d facts, mean p(answer) %.3f, max |Δp| vs numpy %.2g", rec.Correct, len(ex), rec.MeanAnswerProb, worst)
}

// TestDemoIsReproducible checks that the shipped files were made with
// DemoOptions, so that the documented command regenerates them.
func TestDemoIsReproducible(t *testing.T) {
	dir := t.TempDir()
	if err := WriteDemo(dir); err != nil {
		t.Fatal(err)
	}
	f, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d := DemoOptions()
	wc, _ := d.World.withDefaults()
	mc, _ := d.Model.withDefaults()
	tc, _ := d.Train.withDefaults()
	if !reflect.DeepEqual(f.State.World, wc) || f.State.Model != mc || f.State.Train != tc {
		t.Errorf("demo was trained with %+v %+v %+v, DemoOptions say %+v %+v %+v", f.State.World, f.State.Model, f.State.Train, wc, mc, tc)
	}
	w, err := NewWorld(d.World)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(w, f.World) {
		t.Error("world.json differs from the world DemoOptions draw")
	}
	if _, err := os.Stat(dir + "/" + OptimizerFile); err == nil {
		t.Error("the demo ships optimizer state")
	}
	again, err := DemoDir(dir + "/cache")
	if err != nil {
		t.Fatal(err)
	}
	if again2, err := DemoDir(dir + "/cache"); err != nil || again2 != again || !IsToyModel(again) {
		t.Errorf("DemoDir: %q then %q, %v", again, again2, err)
	}
}
