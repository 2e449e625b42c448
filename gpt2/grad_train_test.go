package gpt2

import (
	"context"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/factlens/factlens/weights"
	"github.com/nlpodyssey/spago/nn"
	"github.com/nlpodyssey/spago/optimizers"
	"github.com/nlpodyssey/spago/optimizers/adam"
)

// toyConfig is a small GPT-2 of the kind the toy-model experiments train.
func toyConfig() weights.Config {
	cfg := *weights.DefaultConfig()
	cfg.VocabSize, cfg.NPositions, cfg.NEmbd, cfg.NLayer, cfg.NHead = 300, 16, 64, 2, 4
	cfg.NInner = intPtr(256)
	cfg.BOSTokenID, cfg.EOSTokenID = 299, 299
	return cfg
}

func TestNewTrainableInit(t *testing.T) {
	cfg := toyConfig()
	tr, err := NewTrainable(cfg, 1)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := NewTrainable(cfg, 1)
	other, _ := NewTrainable(cfg, 2)
	names := tr.ParamNames()
	if names[0] != "wte.weight" || slices.Contains(names, "lm_head.weight") || len(names) != len(cfg.ParamSpecs()) {
		t.Errorf("tied model has params %q", names)
	}
	for i, p := range tr.Tensors() {
		if !slices.Equal(p.Data, again.Tensors()[i].Data) {
			t.Errorf("%s differs between two inits with one seed", p.Name)
		}
		var sum, ss float64
		for _, x := range p.Data {
			sum += float64(x)
			ss += float64(x) * float64(x)
		}
		n := float64(len(p.Data))
		mean, std := sum/n, math.Sqrt(ss/n-(sum/n)*(sum/n))
		switch {
		case strings.Contains(p.Name, "ln_") && strings.HasSuffix(p.Name, "weight"):
			if mean != 1 || std != 0 {
				t.Errorf("%s: mean %v std %v, want ones", p.Name, mean, std)
			}
		case len(p.Shape) == 1:
			if mean != 0 || std != 0 {
				t.Errorf("%s: mean %v std %v, want zeros", p.Name, mean, std)
			}
		default:
			want := 0.02
			if strings.HasSuffix(p.Name, "c_proj.weight") {
				want /= math.Sqrt(2 * float64(cfg.NLayer))
			}
			if math.Abs(std-want) > 0.1*want || math.Abs(mean) > 0.1*want {
				t.Errorf("%s: mean %.4f std %.4f, want 0 and %.4f", p.Name, mean, std, want)
			}
			if slices.Equal(p.Data, other.Tensors()[i].Data) {
				t.Errorf("%s is the same under another seed", p.Name)
			}
		}
	}
	f := false
	cfg.TieWordEmbeddings = &f
	untied, err := NewTrainable(cfg, 1)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(untied.ParamNames(), "lm_head.weight") {
		t.Error("untied model has no lm_head.weight")
	}
}

// TestTrainableBackward checks that Trainable.Backward puts exactly the
// gradients of Model.Gradients into the params, accumulates, and that
// ZeroGrad clears them.
func TestTrainableBackward(t *testing.T) {
	in := readInputs(t)
	src := openModel(t, "tied_f32", Processing{})
	tr, err := src.Trainable()
	if err != nil {
		t.Fatal(err)
	}
	obj := CrossEntropyObjective(NextTokenTargets(in.Padded, in.PaddedMask), nil)
	opts := GradOptions{RunOptions: RunOptions{Mask: in.PaddedMask}}
	want := gradRun(t, src, in.Padded, GradOptions{RunOptions: opts.RunOptions, ParamGrads: true}, obj).ParamGrads
	for pass := 1; pass <= 2; pass++ {
		if _, err := tr.Backward(context.Background(), in.Padded, opts, obj); err != nil {
			t.Fatal(err)
		}
		for _, name := range tr.ParamNames() {
			got := tr.Grad(name)
			for i, w := range want[name] {
				if math.Abs(float64(got[i])-float64(pass)*float64(w)) > 1e-6*(1+math.Abs(float64(w))) {
					t.Fatalf("pass %d: %s[%d] = %v, want %d×%v", pass, name, i, got[i], pass, w)
				}
			}
		}
	}
	tr.ZeroGrad()
	for _, name := range tr.ParamNames() {
		if slices.ContainsFunc(tr.Grad(name), func(x float32) bool { return x != 0 }) {
			t.Errorf("%s: gradient not zero after ZeroGrad", name)
		}
	}
	if _, err := openModel(t, "tied_f32", TransformerLensProcessing()).Trainable(); err == nil {
		t.Error("Trainable of a processed model did not fail")
	}
}

// TestTrainableLearns trains a toy model from scratch to memorize a batch
// with AdamW, saves it, and checks that the saved checkpoint reloads to the
// same logits.
func TestTrainableLearns(t *testing.T) {
	tr, err := NewTrainable(toyConfig(), 3)
	if err != nil {
		t.Fatal(err)
	}
	batch := [][]int{{1, 2, 3, 4, 5, 6, 7, 8}, {9, 8, 7, 6, 5, 4, 3, 2}, {20, 21, 20, 21, 20, 21, 20, 21}}
	obj := CrossEntropyObjective(NextTokenTargets(batch, nil), nil)
	opt := NewAdamW(tr, AdamWConfig{WeightDecay: 0.01})
	var first, last float64
	for step := 0; step < 40; step++ {
		res, err := tr.Backward(context.Background(), batch, GradOptions{}, obj)
		if err != nil {
			t.Fatal(err)
		}
		if step == 0 {
			first = res.Value
		}
		last = res.Value
		tr.ClipGradNorm(1)
		opt.Step(3e-3)
	}
	if first < 5 || last > 0.5 {
		t.Errorf("loss went from %.3f to %.3f; want from about ln(300) to near 0", first, last)
	}
	dir := t.TempDir()
	cfg := tr.Model().Config
	if err := weights.SaveCheckpoint(dir, &cfg, tr.Tensors(), weights.SaveOptions{}); err != nil {
		t.Fatal(err)
	}
	ck, err := weights.OpenCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	loaded, err := FromCheckpoint(ck, Processing{})
	if err != nil {
		t.Fatal(err)
	}
	a := mustRun(t, tr.Model(), batch, RunOptions{})
	b := mustRun(t, loaded, batch, RunOptions{})
	if !slices.Equal(a.Logits.Data, b.Logits.Data) {
		t.Error("saved and reloaded model computes different logits")
	}
}

// TestTrainableSpagoOptimizer checks that spago's own optimizers update the
// model through Trainable.Params.
func TestTrainableSpagoOptimizer(t *testing.T) {
	in := readInputs(t)
	tr, err := openModel(t, "tied_f32", Processing{}).Trainable()
	if err != nil {
		t.Fatal(err)
	}
	obj := CrossEntropyObjective(NextTokenTargets(in.Batch, nil), nil)
	opt := optimizers.New(nn.StreamParams(tr.Params()), adam.New(adam.NewConfig(1e-2, 0.9, 0.999, 1e-8)))
	var losses []float64
	for step := 0; step < 3; step++ {
		res, err := tr.Backward(context.Background(), in.Batch, GradOptions{}, obj)
		if err != nil {
			t.Fatal(err)
		}
		losses = append(losses, res.Value)
		if err := opt.Optimize(); err != nil {
			t.Fatal(err)
		}
	}
	if !(losses[2] < losses[1] && losses[1] < losses[0]) {
		t.Errorf("losses %v do not decrease under spago's Adam", losses)
	}
}
