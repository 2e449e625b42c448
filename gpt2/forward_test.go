package gpt2

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
)

func TestStopAtLayer(t *testing.T) {
	m := openModel(t, "tied_f32", Processing{})
	in := readInputs(t)
	full := mustRun(t, m, in.Batch, RunOptions{Cache: cacheAll})
	var fired []string
	res := mustRun(t, m, in.Batch, RunOptions{
		StopAtLayer: 1,
		Cache:       HookGlob("blocks.*.hook_resid_*"),
		Hooks:       []Hook{{HookGlob("blocks.1.*"), func(a *Activation) error { fired = append(fired, a.Name); return nil }}},
	})
	if res.Logits != nil {
		t.Error("StopAtLayer returned logits")
	}
	want := full.Cache["blocks.0.hook_resid_post"]
	if res.Residual == nil || !slices.Equal(res.Residual.Data, want.Data) || !slices.Equal(res.Residual.Shape, want.Shape) {
		t.Fatalf("Residual %v differs from the full run's blocks.0.hook_resid_post", res.Residual)
	}
	if res.Residual.Name != "blocks.0.hook_resid_post" {
		t.Errorf("Residual.Name = %q", res.Residual.Name)
	}
	if len(fired) > 0 {
		t.Errorf("hooks beyond the stop layer fired: %q", fired)
	}
	var cached []string
	for n := range res.Cache {
		cached = append(cached, n)
	}
	slices.Sort(cached)
	if wantNames := []string{"blocks.0.hook_resid_mid", "blocks.0.hook_resid_post", "blocks.0.hook_resid_pre"}; !slices.Equal(cached, wantNames) {
		t.Errorf("cached %q, want %q", cached, wantNames)
	}
}

// TestComputesOnlyWhatIsNeeded checks that LogitsNone stops after the last
// hook point selected and that only selected points are cached.
func TestComputesOnlyWhatIsNeeded(t *testing.T) {
	m := openModel(t, "tied_f32", Processing{})
	in := readInputs(t)
	res := mustRun(t, m, in.Batch, RunOptions{Cache: HookName("blocks.0.mlp.hook_post"), Logits: LogitsNone})
	if res.Logits != nil || res.Residual != nil || len(res.Cache) != 1 || res.Cache["blocks.0.mlp.hook_post"] == nil {
		t.Errorf("result has logits %v, residual %v, cache of %d", res.Logits, res.Residual, len(res.Cache))
	}
	full := mustRun(t, m, in.Batch, RunOptions{Cache: HookName("blocks.0.mlp.hook_post")})
	if !slices.Equal(res.Cache["blocks.0.mlp.hook_post"].Data, full.Cache["blocks.0.mlp.hook_post"].Data) {
		t.Error("early-stopped run cached different values")
	}
	nothing := mustRun(t, m, in.Batch, RunOptions{Logits: LogitsNone})
	if nothing.Logits != nil || nothing.Cache != nil {
		t.Error("a run asking for nothing returned something")
	}
}

func TestLogitsLast(t *testing.T) {
	m := openModel(t, "tied_f32", TransformerLensProcessing())
	in := readInputs(t)
	for _, tc := range []struct {
		name   string
		tokens [][]int
		mask   [][]bool
	}{{"batch", in.Batch, nil}, {"padded", in.Padded, in.PaddedMask}} {
		t.Run(tc.name, func(t *testing.T) {
			all := mustRun(t, m, tc.tokens, RunOptions{Mask: tc.mask})
			last := mustRun(t, m, tc.tokens, RunOptions{Mask: tc.mask, Logits: LogitsLast})
			b, p, v := len(tc.tokens), len(tc.tokens[0]), m.VocabSize()
			if !slices.Equal(last.Logits.Shape, []int{b, 1, v}) {
				t.Fatalf("shape %v", last.Logits.Shape)
			}
			for i := 0; i < b; i++ {
				if d := maxScaledDiff(last.Logits.At(i, 0), all.Logits.At(i, p-1)); d > 1e-6 {
					t.Errorf("row %d: last logits differ from LogitsAll's by %.3g", i, d)
				}
			}
		})
	}
}

func TestPrependBOS(t *testing.T) {
	m := openModel(t, "tied_f32", Processing{})
	in := readInputs(t)
	bos := m.Config.BOSTokenID
	withBOS := mustRun(t, m, in.Batch, RunOptions{PrependBOS: true})
	var manual [][]int
	for _, row := range in.Batch {
		manual = append(manual, append([]int{bos}, row...))
	}
	ref := mustRun(t, m, manual, RunOptions{})
	if !slices.EqualFunc(withBOS.Tokens, manual, slices.Equal[[]int]) {
		t.Errorf("Tokens = %v, want %v", withBOS.Tokens, manual)
	}
	if !slices.Equal(withBOS.Logits.Data, ref.Logits.Data) {
		t.Error("PrependBOS differs from prepending by hand")
	}

	padded := mustRun(t, m, in.Padded, RunOptions{Mask: in.PaddedMask, PrependBOS: true})
	row := padded.Tokens[0]
	if row[3] != bos || !slices.Equal(row[4:], in.Padded[0][3:]) || !slices.Equal(padded.Mask[0], []bool{false, false, false, true, true, true, true, true, true}) {
		t.Errorf("padded row with BOS = %v mask %v: BOS belongs before the first real token", row, padded.Mask[0])
	}
	alone := mustRun(t, m, [][]int{in.Padded[0][3:]}, RunOptions{PrependBOS: true})
	if d := maxScaledDiff(padded.Logits.At(0, 8), alone.Logits.At(0, 5)); d > 1e-5 {
		t.Errorf("padded row with BOS differs from the row alone by %.3g", d)
	}
}

func TestRunRejectsBadInput(t *testing.T) {
	m := openModel(t, "tied_f32", Processing{})
	long := make([]int, m.NCtx()+1)
	for _, tc := range []struct {
		name   string
		tokens [][]int
		opts   RunOptions
		want   string
	}{
		{"empty", nil, RunOptions{}, "empty"},
		{"empty row", [][]int{{}}, RunOptions{}, "empty"},
		{"ragged", [][]int{{1, 2}, {3}}, RunOptions{}, "pad on the left"},
		{"token too large", [][]int{{1, 97}}, RunOptions{}, "out of range"},
		{"negative token", [][]int{{-1}}, RunOptions{}, "out of range"},
		{"too long", [][]int{long}, RunOptions{}, "exceeds n_positions"},
		{"too long with BOS", [][]int{long[1:]}, RunOptions{PrependBOS: true}, "exceeds n_positions"},
		{"right padding", [][]int{{1, 2, 3}}, RunOptions{Mask: [][]bool{{true, true, false}}}, "only left padding"},
		{"hole", [][]int{{1, 2, 3}}, RunOptions{Mask: [][]bool{{true, false, true}}}, "only left padding"},
		{"all padding", [][]int{{1, 2}}, RunOptions{Mask: [][]bool{{false, false}}}, "no real token"},
		{"mask rows", [][]int{{1, 2}}, RunOptions{Mask: [][]bool{{true, true}, {true, true}}}, "mask has 2 rows"},
		{"mask length", [][]int{{1, 2}}, RunOptions{Mask: [][]bool{{true}}}, "mask row 0 has 1"},
		{"stop too far", [][]int{{1}}, RunOptions{StopAtLayer: 3}, "StopAtLayer"},
		{"stop negative", [][]int{{1}}, RunOptions{StopAtLayer: -1}, "StopAtLayer"},
		{"bad logits mode", [][]int{{1}}, RunOptions{Logits: 7}, "logits mode"},
		{"nil hook fn", [][]int{{1}}, RunOptions{Hooks: []Hook{{Match: cacheAll}}}, "nil"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := m.Run(context.Background(), tc.tokens, tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestRunCanceled(t *testing.T) {
	m := openModel(t, "tied_f32", Processing{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := m.Run(ctx, [][]int{{1, 2}}, RunOptions{}); !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
}

// TestWorkspaceReuse runs batches of different shapes on one model, at once
// and one after another, and compares each with a fresh model's result.
func TestWorkspaceReuse(t *testing.T) {
	m := openModel(t, "tied_f32", Processing{})
	in := readInputs(t)
	type job struct {
		tokens [][]int
		mask   [][]bool
	}
	jobs := []job{{in.Batch, nil}, {in.Padded, in.PaddedMask}, {in.Batch[:1], nil}, {[][]int{in.Batch[1][:3]}, nil}}
	want := make([][]float32, len(jobs))
	for i, j := range jobs {
		want[i] = mustRun(t, openModel(t, "tied_f32", Processing{}), j.tokens, RunOptions{Mask: j.mask}).Logits.Data
	}
	var wg sync.WaitGroup
	errs := make([]string, 4*len(jobs))
	for rep := 0; rep < 4; rep++ {
		for i, j := range jobs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				res, err := m.Run(context.Background(), j.tokens, RunOptions{Mask: j.mask, Cache: HookGlob("blocks.1.*")})
				switch {
				case err != nil:
					errs[rep*len(jobs)+i] = err.Error()
				case !slices.Equal(res.Logits.Data, want[i]):
					errs[rep*len(jobs)+i] = "logits differ"
				}
			}()
		}
	}
	wg.Wait()
	for i, e := range errs {
		if e != "" {
			t.Errorf("run %d (job %d): %s", i, i%len(jobs), e)
		}
	}
}

func TestActivationHelpers(t *testing.T) {
	a := &Activation{Name: "x", Shape: []int{2, 3, 4}, Data: make([]float32, 24)}
	for i := range a.Data {
		a.Data[i] = float32(i)
	}
	if got := a.At(1, 2); !slices.Equal(got, []float32{20, 21, 22, 23}) {
		t.Errorf("At(1,2) = %v", got)
	}
	if got := a.At(1); len(got) != 12 || got[0] != 12 {
		t.Errorf("At(1) = %v", got)
	}
	if a.At(2) != nil || a.At(0, -1) != nil || a.At(0, 0, 0, 0) != nil {
		t.Error("At accepted an out-of-range index")
	}
	mat := a.Matrix()
	if s := mat.Shape(); len(s) != 2 || s[0] != 6 || s[1] != 4 {
		t.Errorf("Matrix shape %v, want [6 4]", s)
	}
	a.Data[5] = 99
	if mat.Data().F32()[5] != 99 {
		t.Error("Matrix copied the data")
	}
	c := a.Clone()
	c.Data[0], c.Shape[0] = -1, 7
	if a.Data[0] == -1 || a.Shape[0] == 7 {
		t.Error("Clone shares memory")
	}
}
