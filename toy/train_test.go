package toy

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/factlens/factlens/weights"
)

// tinyOptions is a world and model small enough to train in about a second.
func tinyOptions() Options {
	return Options{
		World: WorldConfig{Seed: 5, People: 128},
		Model: ModelConfig{Layers: 1, DModel: 16, Heads: 1, DMLP: 64},
		Train: TrainConfig{Seed: 2, LR: 3e-3, BatchSize: 64, MaxSteps: 1500, EvalEvery: 100},
	}
}

// TestTrainReachesRecall checks the claim of the package documentation for
// small runs: a 1-layer, d_model 16 model with 64 MLP neurons recalls every
// fact of a 128-person world within 1,500 steps, far above what either
// name alone allows; and the folder it saves recalls the same through the
// ordinary checkpoint path.
func TestTrainReachesRecall(t *testing.T) {
	opts := tinyOptions()
	opts.Dir = t.TempDir()
	var points int
	opts.Progress = func(st *TrainState) { points++ }
	res, err := Train(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	st := res.State
	t.Logf("recall %.3f after %d steps (%.1f s, %.0f steps/s): %s", st.Final.Accuracy, st.Step, st.Seconds, st.StepsPerSecond(), st.StopReason)
	if st.Final.Accuracy != 1 || st.StopReason != "every fact recalled" {
		t.Errorf("recall %.3f after %d steps (%s), want 1", st.Final.Accuracy, st.Step, st.StopReason)
	}
	_, base := worldBaselines(res.World)
	if base > 0.4 {
		t.Errorf("single-name baseline %.3f: the world does not need the conjunction", base)
	}
	if points != len(st.History) || points == 0 {
		t.Errorf("%d progress calls for %d measurements", points, len(st.History))
	}

	f, err := Open(opts.Dir)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ex, err := Encode(f.Tokenizer, f.World.Facts())
	if err != nil {
		t.Fatal(err)
	}
	rec, err := Evaluate(context.Background(), f.Model, ex)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Correct != st.Final.Correct || math.Abs(rec.MeanLoss-st.Final.MeanLoss) > 1e-6 {
		t.Errorf("reloaded: %d correct, loss %v; in memory %d, %v", rec.Correct, rec.MeanLoss, st.Final.Correct, st.Final.MeanLoss)
	}
	if f.State.Step != st.Step || !f.State.Done {
		t.Errorf("training.json: step %d done %v", f.State.Step, f.State.Done)
	}
}

func paramsOf(t *testing.T, dir string) map[string][]float32 {
	t.Helper()
	ck, err := weights.OpenCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	out := map[string][]float32{}
	for name, p := range ck.Params {
		out[name] = slices.Clone(p.Data)
	}
	return out
}

// TestTrainDeterministicAndResumable checks that the same seeds give
// bit-identical weights, and that stopping and resuming gives the weights of
// an uninterrupted run, bit for bit.
func TestTrainDeterministicAndResumable(t *testing.T) {
	ctx := context.Background()
	run := func(maxSteps int, dir string, resume bool) {
		t.Helper()
		opts := tinyOptions()
		opts.Train.MaxSteps, opts.Train.EvalEvery, opts.Train.SaveEvery = maxSteps, 10, 20
		opts.Dir, opts.Resume = dir, resume
		res, err := Train(ctx, opts)
		if err != nil {
			t.Fatal(err)
		}
		if res.State.Step != maxSteps {
			t.Fatalf("stopped at step %d (%s), want %d", res.State.Step, res.State.StopReason, maxSteps)
		}
	}
	a, b, c := t.TempDir(), t.TempDir(), t.TempDir()
	run(60, a, false)
	run(60, b, false)
	run(30, c, false)
	run(60, c, true)
	pa, pb, pc := paramsOf(t, a), paramsOf(t, b), paramsOf(t, c)
	for name, want := range pa {
		if !slices.Equal(pb[name], want) {
			t.Errorf("%s differs between two runs with the same seeds", name)
		}
		if !slices.Equal(pc[name], want) {
			t.Errorf("%s differs between a resumed run and an uninterrupted one", name)
		}
	}
	init := InitParams(mustConfig(t, tinyOptions().Model), tinyOptions().Train.Seed)
	if slices.Equal(init[0].Data, pa[init[0].Name]) {
		t.Error("training did not change wte")
	}

	// Resuming with other settings is refused.
	opts := tinyOptions()
	opts.Train.LR *= 2
	opts.Dir, opts.Resume = a, true
	if _, err := Train(ctx, opts); err == nil {
		t.Error("resume with another learning rate: no error")
	}
}

func mustConfig(t *testing.T, m ModelConfig) *weights.Config {
	t.Helper()
	cfg, err := m.WeightsConfig(NewVocabulary())
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestBatchOrder checks that every epoch visits every fact once.
func TestBatchOrder(t *testing.T) {
	const n, size = 10, 4
	for epoch := range 3 {
		var seen []int
		for s := epoch * 3; s < (epoch+1)*3; s++ {
			seen = append(seen, batchAt(9, s, n, size)...)
		}
		slices.Sort(seen)
		for i, v := range seen {
			if v != i {
				t.Fatalf("epoch %d visits %v", epoch, seen)
			}
		}
	}
}

func TestInitParams(t *testing.T) {
	cfg := mustConfig(t, ModelConfig{Layers: 2, DModel: 32, Heads: 2, DMLP: 48})
	ps := InitParams(cfg, 1)
	if len(ps) != len(cfg.ParamSpecs()) {
		t.Fatalf("%d tensors for %d specs", len(ps), len(cfg.ParamSpecs()))
	}
	std := func(d []float32) float64 {
		var s float64
		for _, v := range d {
			s += float64(v) * float64(v)
		}
		return math.Sqrt(s / float64(len(d)))
	}
	for _, tc := range []struct {
		name string
		want float64
	}{
		{"wte.weight", 1 / math.Sqrt(32)},
		{"wpe.weight", 0.02},
		{"h.0.mlp.c_fc.weight", 1 / math.Sqrt(32)},
		{"h.1.mlp.c_proj.weight", 1 / math.Sqrt(48) / 2},
		{"h.0.ln_1.weight", 1},
		{"h.0.attn.c_attn.bias", 0},
	} {
		i := slices.IndexFunc(ps, func(p weights.Tensor) bool { return p.Name == tc.name })
		if got := std(ps[i].Data); math.Abs(got-tc.want) > 0.1*tc.want+1e-9 {
			t.Errorf("%s: rms %.4f, want %.4f", tc.name, got, tc.want)
		}
	}
	dir := t.TempDir()
	if err := weights.SaveCheckpoint(dir, cfg, ps, weights.SaveOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := weights.OpenCheckpoint(filepath.Join(dir, weights.ModelFileName)); err != nil {
		t.Fatal(err)
	}
}

// TestAdamMatchesPyTorch compares the optimizer with torch.optim.AdamW
// (testdata/adam/make_golden.py), with and without weight decay.
func TestAdamMatchesPyTorch(t *testing.T) {
	b, err := os.ReadFile("testdata/adam/golden.json")
	if err != nil {
		t.Fatal(err)
	}
	var g struct {
		LR, Beta1, Beta2 float64
		Runs             []struct {
			WeightDecay float64       `json:"weight_decay"`
			Init        [][]float32   `json:"init"`
			Grads       [][][]float32 `json:"grads"`
			After       [][][]float32 `json:"after"`
		}
	}
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatal(err)
	}
	for _, run := range g.Runs {
		var params []weights.Tensor
		for i, p := range run.Init {
			params = append(params, weights.Tensor{Name: fmt.Sprint(i), Shape: []int{len(p)}, Data: slices.Clone(p)})
		}
		opt := newAdam(TrainConfig{LR: g.LR, Beta1: g.Beta1, Beta2: g.Beta2, WeightDecay: run.WeightDecay}, params)
		for step, grads := range run.Grads {
			opt.step(params, grads)
			for i, p := range params {
				for j, v := range p.Data {
					if want := run.After[step][i][j]; math.Abs(float64(v-want)) > 1e-6*(1+math.Abs(float64(want))) {
						t.Errorf("decay %v step %d param %d[%d]: %v, torch %v", run.WeightDecay, step, i, j, v, want)
					}
				}
			}
		}
	}
}
