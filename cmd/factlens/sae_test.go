package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/factlens/factlens/cmd/factlens/report"
	"github.com/factlens/factlens/sae"
	"github.com/factlens/factlens/weights"
)

const shakespeare = "../../../shared/data/corpus/tinyshakespeare.txt"

// shakespeareCorpus writes the first lines of Tiny Shakespeare to a file.
func shakespeareCorpus(t *testing.T, lines int) string {
	t.Helper()
	f, err := os.Open(shakespeare)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b strings.Builder
	sc := bufio.NewScanner(f)
	for i := 0; i < lines && sc.Scan(); i++ {
		b.WriteString(sc.Text())
		b.WriteByte('\n')
	}
	path := filepath.Join(t.TempDir(), "shakespeare.txt")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func mustDecode[T any](t *testing.T, out outcome) *T {
	t.Helper()
	if out.code != 0 {
		t.Fatalf("exit %d: %s", out.code, out.stderr)
	}
	v := new(T)
	if err := json.Unmarshal([]byte(out.stdout), v); err != nil {
		t.Fatalf("%v\n%s", err, out.stdout)
	}
	return v
}

const saeHookName = "blocks.1.hook_resid_pre"

// trainArgs are the settings of a TopK SAE small enough to train in about a
// second on the tiny model (d_model 16, 32 positions).
func trainArgs(model, corpus, out string, extra ...string) []string {
	return append([]string{"sae", "train", "--model", model, "--hook", saeHookName, "--corpus", corpus, "--out", out,
		"--k", "4", "--expansion", "4", "--batch", "128", "--tokens", fmt.Sprint(128 * 60), "--context", "32",
		"--buffer", "1024", "--norm-batches", "2", "--checkpoint-every", "20", "--seed", "7", "--quiet"}, extra...)
}

// TestSAETrainEvalFeatures trains a TopK SAE through the CLI, evaluates it
// and lists features, and checks the features against an independent path:
// the activations `factlens cache` writes, encoded by the saved SAE.
func TestSAETrainEvalFeatures(t *testing.T) {
	model := tinyCheckpoint(t)
	corpus := shakespeareCorpus(t, 400)
	dir := filepath.Join(t.TempDir(), "sae")

	tr := mustDecode[saeTrainResult](t, factlens(t, "", append(trainArgs(model, corpus, dir), "--format", "json")...))
	if tr.Steps != 60 || tr.TrainingTokens != 60*128 || tr.DIn != 16 || tr.DSAE != 64 || tr.K != 4 {
		t.Errorf("run: steps %d, tokens %d, d_in %d, d_sae %d, k %d", tr.Steps, tr.TrainingTokens, tr.DIn, tr.DSAE, tr.K)
	}
	if tr.Final == nil || tr.Final.L0 > 4 || tr.Final.L0 < 1 || len(tr.History) != 60 {
		t.Fatalf("final %+v after %d logged steps; TopK keeps at most k=4 latents", tr.Final, len(tr.History))
	}
	if first, last := tr.History[0].MSE, tr.Final.MSE; !(last < first) {
		t.Errorf("MSE did not fall: %g → %g", first, last)
	}
	if tr.HarvestedTokens < tr.TrainingTokens || tr.HarvestTokensPerSec <= 0 || tr.TrainTokensPerSecond <= 0 {
		t.Errorf("throughput: harvested %d tokens at %g/s, trained at %g/s", tr.HarvestedTokens, tr.HarvestTokensPerSec, tr.TrainTokensPerSecond)
	}
	if !strings.Contains(tr.DecoderHandling, "unit norm") || !strings.Contains(tr.DecoderHandling, "folded") {
		t.Errorf("decoder-norm statement: %s", tr.DecoderHandling)
	}
	if filepath.Base(tr.Checkpoint) != "step_000000060" {
		t.Errorf("last checkpoint %s, want step_000000060", tr.Checkpoint)
	}

	s, err := sae.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	md := s.Config.Metadata
	if md.HookName != saeHookName || md.ContextSize != 32 || md.PrependBOS || md.DatasetPath != corpus || md.ModelName != model {
		t.Errorf("cfg metadata %+v", md)
	}
	if p := s.Config.RequiresProcessing; !p.Known || p.CenterWritingWeights || p.FoldLN {
		t.Errorf("cfg processing %v, want known raw weights", p)
	}
	// TopK decoder rows are unit norm while training; the folded
	// normalization factor divides them: every saved row has norm 1/f.
	if f := tr.NormScalingFactor; !(f > 0) || f == 1 {
		t.Fatalf("norm scaling factor %g", f)
	}
	for j := 0; j < s.Config.DSAE; j++ {
		var ss float64
		for _, v := range s.WDec[j*16 : (j+1)*16] {
			ss += float64(v) * float64(v)
		}
		if got, want := math.Sqrt(ss), 1/tr.NormScalingFactor; math.Abs(got-want) > 1e-4*want {
			t.Fatalf("decoder row %d has norm %g, want 1/f = %g", j, got, want)
		}
	}
	var record saeTrainResult
	if b, err := os.ReadFile(filepath.Join(dir, "training.json")); err != nil || json.Unmarshal(b, &record) != nil || record.Steps != 60 {
		t.Errorf("training.json: %v, steps %d", err, record.Steps)
	}

	ev := mustDecode[saeEvalResult](t, factlens(t, "", "sae", "eval", "--model", model, "--sae", dir, "--corpus", corpus,
		"--windows", "6", "--format", "json"))
	m := ev.Metrics
	if m.L0 <= 0 || m.L0 > 4 || ev.ActiveFeatures.Max > 4 {
		t.Errorf("eval L0 %g (max %d); TopK keeps at most 4", m.L0, ev.ActiveFeatures.Max)
	}
	// 6 windows of 32 tokens; <|endoftext|> never occurs in these lines.
	if m.Tokens != 6*32 || ev.Windows != 6 || ev.Context != 32 || ev.Hook != saeHookName {
		t.Errorf("eval over %d tokens, %d windows of %d at %s", m.Tokens, ev.Windows, ev.Context, ev.Hook)
	}
	if m.CELossScore == nil || m.KLDivScore == nil || math.IsNaN(*m.CELossScore) || !(m.ExplainedVariance > -1 && m.ExplainedVariance <= 1) {
		t.Fatalf("eval metrics %+v", m)
	}
	if !strings.Contains(ev.ProcessingNote, "Applied the SAE's weight processing") || ev.ProcessingWarning != "" {
		t.Errorf("processing note %q, warning %q", ev.ProcessingNote, ev.ProcessingWarning)
	}
	var hist int
	for _, b := range ev.DensityHistogram {
		hist += b.Count
	}
	if hist != 64 || len(ev.FeatureDensity) != 64 {
		t.Errorf("density histogram counts %d latents, densities %d; want 64", hist, len(ev.FeatureDensity))
	}

	const prompt = "Michael Jordan plays the sport of"
	ft := mustDecode[saeFeaturesResult](t, factlens(t, "", "sae", "features", "--model", model, "--sae", dir, "--top", "3", "--format", "json", prompt))
	if len(ft.Positions) != 6 {
		t.Fatalf("%d positions, want 6", len(ft.Positions))
	}
	acts := filepath.Join(t.TempDir(), "acts.safetensors")
	if out := factlens(t, "", "cache", "--model", model, "--hooks", saeHookName, "--out", acts, "--quiet", prompt); out.code != 0 {
		t.Fatalf("cache: %s", out.stderr)
	}
	sf, err := weights.OpenSafetensors(acts)
	if err != nil {
		t.Fatal(err)
	}
	defer sf.Close()
	x, err := sf.Float32(saeHookName)
	if err != nil {
		t.Fatal(err)
	}
	enc, err := s.Encode(x, 6)
	if err != nil {
		t.Fatal(err)
	}
	for p, pos := range ft.Positions {
		row := enc[p*64 : (p+1)*64]
		active, best, bestV := 0, -1, float32(0)
		for j, v := range row {
			if v > 0 {
				active++
				if v > bestV {
					best, bestV = j, v
				}
			}
		}
		if pos.Active != active {
			t.Errorf("token %d: features reports %d active latents, the cached activations encode to %d", p, pos.Active, active)
		}
		if len(pos.Top) == 0 || pos.Top[0].Index != best || math.Abs(float64(pos.Top[0].Value-bestV)) > 1e-5*float64(bestV) {
			t.Errorf("token %d: top latent %+v, cached path gives %d: %g", p, pos.Top, best, bestV)
		}
	}

	// Every format renders; HTML has the curves, the histogram and the bars.
	for _, format := range []string{"text", "md"} {
		out := factlens(t, "", "sae", "eval", "--model", model, "--sae", dir, "--corpus", corpus, "--windows", "2", "--format", format)
		if out.code != 0 || !strings.Contains(out.stdout, "cossim") {
			t.Errorf("eval --format %s: exit %d: %s", format, out.code, out.stderr)
		}
	}
	html := filepath.Join(t.TempDir(), "eval.html")
	if out := factlens(t, "", "sae", "eval", "--model", model, "--sae", dir, "--corpus", corpus, "--windows", "2", "--format", "html", "--out", html); out.code != 0 {
		t.Fatalf("eval html: %s", out.stderr)
	}
	if b, _ := os.ReadFile(html); strings.Count(string(b), "<rect") < 20 {
		t.Errorf("eval HTML lacks the density histogram's bars")
	}
	html = filepath.Join(t.TempDir(), "features.html")
	if out := factlens(t, "", "sae", "features", "--model", model, "--sae", dir, "--format", "html", "--out", html, prompt); out.code != 0 {
		t.Fatalf("features html: %s", out.stderr)
	}
	if b, _ := os.ReadFile(html); !strings.Contains(string(b), "Active latents (L0)") || !strings.Contains(string(b), "<svg") {
		t.Errorf("features HTML lacks the L0 bars")
	}
	var doc bytes.Buffer
	if err := renderResult(&doc, "html", tr, func() *report.Document { return trainDocument(tr, nil, "html") }); err != nil {
		t.Fatal(err)
	}
	if strings.Count(doc.String(), "<polyline") != 5 { // total, MSE, aux-k; L0; EV
		t.Errorf("training HTML has %d curves, want 5", strings.Count(doc.String(), "<polyline"))
	}
}

// TestSAETrainStandard trains the ReLU + L1 architecture: its decoder rows
// are free (the saved norms differ), the L1 term is logged and the SAE
// evaluates.
func TestSAETrainStandard(t *testing.T) {
	model := tinyCheckpoint(t)
	corpus := shakespeareCorpus(t, 200)
	dir := filepath.Join(t.TempDir(), "sae")
	args := append(trainArgs(model, corpus, dir, "--arch", "standard", "--l1", "0.5", "--normalize", "none", "--format", "json"), "--tokens", fmt.Sprint(128*30))
	tr := mustDecode[saeTrainResult](t, factlens(t, "", args...))
	if tr.Architecture != "standard" || tr.K != 0 || tr.L1Coefficient != 0.5 || tr.Steps != 30 || tr.NormScalingFactor != 1 {
		t.Errorf("run %+v", tr)
	}
	if tr.Final == nil || !(tr.Final.L1 > 0) || tr.Final.Aux != 0 {
		t.Fatalf("final %+v: want a positive L1 term and no aux-k", tr.Final)
	}
	if !strings.Contains(tr.DecoderHandling, "not constrained") || !(tr.DecoderNorms.Max > tr.DecoderNorms.Min) {
		t.Errorf("decoder norms %+v: %s", tr.DecoderNorms, tr.DecoderHandling)
	}
	s, err := sae.Load(dir)
	if err != nil || s.Config.Architecture != sae.Standard {
		t.Fatalf("load: %v", err)
	}
	ev := mustDecode[saeEvalResult](t, factlens(t, "", "sae", "eval", "--model", model, "--sae", dir, "--corpus", corpus,
		"--windows", "2", "--reconstruction-only", "--format", "json"))
	if ev.Metrics.CELossScore != nil || !(ev.Metrics.L0 > 0) {
		t.Errorf("reconstruction-only eval: %+v", ev.Metrics)
	}
}

// identitySAE is a standard SAE that reconstructs its input exactly:
// latents i and d+i are ReLU(x_i) and ReLU(−x_i), decoded as their
// difference. Its metrics are known without running anything: L0 = d_in
// (one of each pair fires unless x_i = 0), perfect reconstruction, and the
// densities of latents i and d+i add up to 1.
func identitySAE(t *testing.T, dIn int) string {
	t.Helper()
	d := dIn
	s := &sae.SAE{Config: sae.Config{Architecture: sae.Standard, DIn: d, DSAE: 2 * d, Normalization: sae.NormNone,
		ReshapeActivations: "none", Metadata: sae.Metadata{HookName: saeHookName, ContextSize: 32},
		RequiresProcessing: sae.Processing{Known: true}},
		WEnc: make([]float32, d*2*d), BEnc: make([]float32, 2*d), WDec: make([]float32, 2*d*d), BDec: make([]float32, d)}
	for i := 0; i < d; i++ {
		s.WEnc[i*2*d+i], s.WEnc[i*2*d+d+i] = 1, -1
		s.WDec[i*d+i], s.WDec[(d+i)*d+i] = 1, -1
	}
	dir := filepath.Join(t.TempDir(), "identity")
	if err := s.Save(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestSAEPretrainedRelease loads an SAE by SAELens release name from a
// loopback Hub. The release table says the gpt2-small-res-jb SAEs expect
// center_writing_weights; features applies it by default. The identity SAE
// shows it independently: latents i and d+i are the positive and negative
// parts of x_i, and a centered residual stream has Σ_i x_i = 0, so at every
// token the two halves of the activations sum to the same value.
func TestSAEPretrainedRelease(t *testing.T) {
	model := tinyCheckpoint(t)
	local := identitySAE(t, 16)
	// The cfg names no processing, so the release table's applies.
	raw, err := os.ReadFile(filepath.Join(local, sae.CfgFile))
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	cfg["metadata"].(map[string]any)["model_from_pretrained_kwargs"] = nil
	raw, _ = json.Marshal(cfg)
	weightsFile, err := os.ReadFile(filepath.Join(local, sae.WeightsFile))
	if err != nil {
		t.Fatal(err)
	}
	const commit = "89abcdef0123456789abcdef0123456789abcdef"
	hub := miniHub(t, "jbloom/GPT2-Small-SAEs-Reformatted", commit, map[string][]byte{
		saeHookName + "/" + sae.CfgFile: raw, saeHookName + "/" + sae.WeightsFile: weightsFile})
	cache := t.TempDir()
	env := map[string]string{"HF_ENDPOINT": hub.URL, "HF_HUB_CACHE": cache, "HF_HOME": cache}
	features := func(extra ...string) outcome {
		args := append([]string{"sae", "features", "--model", model, "--sae", "gpt2-small-res-jb:" + saeHookName,
			"--top", "32", "--format", "json"}, extra...)
		var stdout, stderr bytes.Buffer
		code := run(append(args, "To be, or not to be"), strings.NewReader(""), &stdout, &stderr, func(k string) string { return env[k] })
		return outcome{code, stdout.String(), stderr.String()}
	}
	// halves returns the largest relative difference between the sums of
	// the positive-part and negative-part latents over the tokens.
	halves := func(r *saeFeaturesResult) float64 {
		worst := 0.0
		for _, p := range r.Positions {
			var pos, neg float64
			for _, f := range p.Top {
				if f.Index < 16 {
					pos += float64(f.Value)
				} else {
					neg += float64(f.Value)
				}
			}
			worst = math.Max(worst, math.Abs(pos-neg)/math.Max(pos, 1e-9))
		}
		return worst
	}

	ft := mustDecode[saeFeaturesResult](t, features())
	if ft.SAE.Release != "gpt2-small-res-jb" || ft.SAE.Commit != commit || !strings.Contains(ft.Processing, "center_writing_weights") ||
		!strings.Contains(ft.ProcessingNote, "Applied the SAE's weight processing") || ft.ProcessingWarning != "" {
		t.Errorf("release %q@%s, processing %q, note %q, warning %q", ft.SAE.Release, ft.SAE.Commit, ft.Processing, ft.ProcessingNote, ft.ProcessingWarning)
	}
	if d := halves(ft); d > 1e-4 {
		t.Errorf("centered residual stream: positive and negative halves differ by %g", d)
	}
	out := features("--processing", "hf")
	raw2 := mustDecode[saeFeaturesResult](t, out)
	if !strings.Contains(raw2.ProcessingWarning, "center_writing_weights=true") || !strings.Contains(out.stderr, "warning") {
		t.Errorf("explicit raw weights: warning %q, stderr %q", raw2.ProcessingWarning, out.stderr)
	}
	if d := halves(raw2); d < 1e-2 {
		t.Errorf("raw residual stream: halves agree to %g, so the check above proves nothing", d)
	}
}

func TestSAEIdentityMetrics(t *testing.T) {
	model := tinyCheckpoint(t)
	corpus := shakespeareCorpus(t, 200)
	dir := identitySAE(t, 16)
	ev := mustDecode[saeEvalResult](t, factlens(t, "", "sae", "eval", "--model", model, "--sae", dir, "--corpus", corpus,
		"--windows", "4", "--format", "json"))
	m := ev.Metrics
	near := func(name string, got, want, tol float64) {
		t.Helper()
		if math.Abs(got-want) > tol {
			t.Errorf("%s = %.9g, want %g", name, got, want)
		}
	}
	near("l0", m.L0, 16, 0)
	near("explained_variance", m.ExplainedVariance, 1, 1e-6)
	near("cossim", m.CosSim, 1, 1e-6)
	near("l2_ratio", m.L2Ratio, 1, 1e-6)
	near("mse", m.MSE, 0, 1e-10)
	near("ce_loss_score", *m.CELossScore, 1, 1e-4)
	near("ce_loss_with_sae − without", *m.CELossWithSAE-*m.CELossWithoutSAE, 0, 1e-5)
	near("kl_div_with_sae", *m.KLDivWithSAE, 0, 1e-6)
	near("kl_div_score", *m.KLDivScore, 1, 1e-5)
	if !(*m.CELossWithAblation > *m.CELossWithoutSAE) || !(*m.KLDivWithAblation > 0) {
		t.Errorf("zero-ablating the residual stream should hurt: CE %g vs clean %g, KL %g", *m.CELossWithAblation, *m.CELossWithoutSAE, *m.KLDivWithAblation)
	}
	for i := 0; i < 16; i++ {
		near(fmt.Sprintf("density(%d) + density(%d)", i, 16+i), ev.FeatureDensity[i]+ev.FeatureDensity[16+i], 1, 1e-12)
	}
	ft := mustDecode[saeFeaturesResult](t, factlens(t, "", "sae", "features", "--model", model, "--sae", dir, "--format", "json", "To be, or not to be"))
	for _, p := range ft.Positions {
		if p.Active != 16 || math.Abs(p.CosSim-1) > 1e-6 || p.RelativeError > 1e-10 {
			t.Errorf("token %d %q: %d active, cos %g, relative error %g; want 16, 1, 0", p.Pos, p.Token, p.Active, p.CosSim, p.RelativeError)
		}
	}
	// Under TransformerLens processing the residual stream is centered: the
	// SAE says it expects raw weights, so an explicit --processing tl warns.
	out := factlens(t, "", "sae", "eval", "--model", model, "--sae", dir, "--corpus", corpus, "--windows", "1", "--processing", "tl", "--format", "json")
	if ev := mustDecode[saeEvalResult](t, out); !strings.Contains(ev.ProcessingWarning, "center_writing_weights") ||
		!strings.Contains(out.stderr, "warning") {
		t.Errorf("no processing warning: %q / %q", ev.ProcessingWarning, out.stderr)
	}
}

// TestSAETrainResumesAfterInterrupt cancels a run once a checkpoint exists
// (as Ctrl-C does), checks the checkpoint survives, and resumes it with
// nothing but --out and a larger budget.
func TestSAETrainResumesAfterInterrupt(t *testing.T) {
	model := tinyCheckpoint(t)
	corpus := shakespeareCorpus(t, 200)
	dir := filepath.Join(t.TempDir(), "sae")
	args := trainArgs(model, corpus, dir)
	for i, a := range args {
		if a == "--tokens" {
			args[i+1] = "100000000" // far more than runs before the cancel
		}
		if a == "--checkpoint-every" {
			args[i+1] = "3"
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		for ctx.Err() == nil {
			if _, err := sae.LatestCheckpoint(filepath.Join(dir, "checkpoints")); err == nil {
				cancel()
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	var stdout, stderr bytes.Buffer
	a := &app{stdin: strings.NewReader(""), stdout: &stdout, stderr: &stderr, getenv: func(string) string { return "" }}
	root := a.rootCommand()
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled run returned %v", err)
	}
	ck, err := sae.LatestCheckpoint(filepath.Join(dir, "checkpoints"))
	if err != nil {
		t.Fatal(err)
	}
	var done int
	if _, err := fmt.Sscanf(filepath.Base(ck), "step_%d", &done); err != nil || done < 3 || done%3 != 0 {
		t.Fatalf("checkpoint %s", ck)
	}
	if _, err := sae.Load(ck); err != nil {
		t.Fatalf("the checkpoint does not load: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, sae.CfgFile)); err == nil {
		t.Error("an interrupted run saved a final SAE")
	}

	total := done + 6
	tr := mustDecode[saeTrainResult](t, factlens(t, "", "sae", "train", "--model", model, "--out", dir, "--resume",
		"--tokens", fmt.Sprint(total*128), "--format", "json", "--quiet"))
	if tr.ResumedFromStep != done || tr.Steps != total || tr.TrainedTokens != 6*128 || tr.Hook != saeHookName || tr.Seed != 7 {
		t.Errorf("resumed from %d to %d (%d tokens) at %s seed %d; want %d to %d", tr.ResumedFromStep, tr.Steps, tr.TrainedTokens, tr.Hook, tr.Seed, done, total)
	}
	if s, err := sae.Load(dir); err != nil || s.Config.K != 4 {
		t.Errorf("resumed SAE: %v", err)
	}
	// A fresh run into the same folder would overwrite the checkpoints.
	out := factlens(t, "", trainArgs(model, corpus, dir)...)
	if out.code != 1 || !strings.Contains(out.stderr, "--resume") {
		t.Errorf("training over a checkpoint: exit %d: %s", out.code, out.stderr)
	}
	out = factlens(t, "", "sae", "train", "--model", model, "--out", dir, "--resume", "--k", "8")
	if out.code != 1 || !strings.Contains(out.stderr, "--k cannot change") {
		t.Errorf("resume with another k: exit %d: %s", out.code, out.stderr)
	}
}

func TestSAEErrors(t *testing.T) {
	model := tinyCheckpoint(t)
	corpus := shakespeareCorpus(t, 50)
	empty := filepath.Join(t.TempDir(), "empty.txt")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	identity := identitySAE(t, 16)
	out := filepath.Join(t.TempDir(), "out")
	train := func(extra ...string) []string {
		return append([]string{"sae", "train", "--model", model, "--out", out, "--context", "32", "--quiet"}, extra...)
	}
	tests := []struct {
		name     string
		args     []string
		code     int
		contains string
	}{
		{"missing hook", train("--corpus", corpus), 1, "--hook is required"},
		{"missing corpus flag", train("--hook", saeHookName), 1, "--corpus"},
		{"missing out", []string{"sae", "train", "--model", model, "--hook", saeHookName, "--corpus", corpus}, 1, "--out"},
		{"unknown hook", train("--hook", "blocks.1.hook_resid_pr", "--corpus", corpus), 2, `did you mean "blocks.1.hook_resid_pre"`},
		{"missing corpus file", train("--hook", saeHookName, "--corpus", "no/such/corpus.txt"), 2, "no/such/corpus.txt"},
		{"empty corpus", train("--hook", saeHookName, "--corpus", empty), 2, "fewer than 32 tokens"},
		{"bad arch", train("--hook", saeHookName, "--corpus", corpus, "--arch", "gated"), 1, "--arch"},
		{"bad normalize", train("--hook", saeHookName, "--corpus", corpus, "--normalize", "layer_norm"), 1, "--normalize"},
		{"expansion and d-sae", train("--hook", saeHookName, "--corpus", corpus, "--expansion", "2", "--d-sae", "40"), 1, "not both"},
		{"k above d_sae", train("--hook", saeHookName, "--corpus", corpus, "--expansion", "1", "--k", "17"), 1, "k=17"},
		{"context too long", train("--hook", saeHookName, "--corpus", corpus, "--context", "64"), 1, "exceeds"},
		{"resume without checkpoint", []string{"sae", "train", "--model", model, "--out", filepath.Join(t.TempDir(), "x"), "--resume"}, 2, "no checkpoint"},
		{"d_in mismatch", []string{"sae", "eval", "--model", model, "--sae", identity, "--hook", "blocks.0.mlp.hook_post", "--corpus", corpus}, 2, "d_in 16 but blocks.0.mlp.hook_post"},
		{"eval missing corpus flag", []string{"sae", "eval", "--model", model, "--sae", identity}, 1, "--corpus"},
		{"eval missing corpus file", []string{"sae", "eval", "--model", model, "--sae", identity, "--corpus", "no/such.txt"}, 2, "no/such.txt"},
		{"eval empty corpus", []string{"sae", "eval", "--model", model, "--sae", identity, "--corpus", empty}, 2, "fewer than"},
		{"missing sae flag", []string{"sae", "features", "--model", model, "hi"}, 1, "--sae is required"},
		{"missing sae folder", []string{"sae", "features", "--model", model, "--sae", "./no/such/sae", "hi"}, 2, "no such folder"},
		{"release without id", []string{"sae", "features", "--model", model, "--sae", "gpt2-small-res-jb", "hi"}, 1, "gpt2-small-res-jb:blocks."},
		{"not cached offline", []string{"sae", "features", "--model", model, "--sae", "gpt2-small-res-jb:blocks.8.hook_resid_pre", "hi"}, 2, "cfg.json"},
		{"empty prompt", []string{"sae", "features", "--model", model, "--sae", identity, ""}, 1, "empty prompt"},
		{"features unknown hook", []string{"sae", "features", "--model", model, "--sae", identity, "--hook", "blocks.9.hook_resid_pre", "hi"}, 2, "did you mean"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := factlens(t, "", tt.args...)
			if out.code != tt.code {
				t.Errorf("exit %d, want %d; stderr:\n%s", out.code, tt.code, out.stderr)
			}
			if !strings.Contains(out.stderr, tt.contains) {
				t.Errorf("stderr lacks %q:\n%s", tt.contains, out.stderr)
			}
			if tt.code == 2 && strings.Count(strings.TrimSpace(out.stderr), "\n") != 0 {
				t.Errorf("failure message is not one line:\n%s", out.stderr)
			}
		})
	}
}
