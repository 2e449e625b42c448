//go:build unix

package sae

import (
	"context"
	"fmt"
	"math/rand/v2"
	"syscall"
	"testing"
)

// cpuSeconds is the process's user+system CPU time.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime) + tv(ru.Stime)
}

// fixedSource serves the same random batch every time, so that benchmarks
// measure training alone.
type fixedSource struct {
	d     int
	batch []float32
}

func newFixedSource(d, rows int) *fixedSource {
	r := rand.New(rand.NewPCG(1, 1))
	b := make([]float32, rows*d)
	for i := range b {
		b[i] = float32(r.NormFloat64())
	}
	return &fixedSource{d: d, batch: b}
}

func (f *fixedSource) DIn() int { return f.d }

func (f *fixedSource) Next(_ context.Context, dst []float32) error {
	copy(dst, f.batch)
	return nil
}

// BenchmarkTrainStep measures training throughput at GPT-2 small sizes with
// SAELens' batch of 4096 tokens: residual stream (768) × 6144 and MLP
// neurons (3072) × 12288. "aux" marks half the latents dead so that the
// aux-k loss runs. Run with -benchtime=3x; one op is one step.
func BenchmarkTrainStep(b *testing.B) {
	for _, c := range []struct {
		arch      Architecture
		dIn, dSAE int
		deadFrac  float64
	}{
		{TopK, 768, 6144, 0},
		{TopK, 768, 6144, 0.5},
		{Standard, 768, 6144, 0},
		{TopK, 3072, 12288, 0},
		{TopK, 3072, 12288, 0.5},
	} {
		name := fmt.Sprintf("%s/%dx%d", c.arch, c.dIn, c.dSAE)
		if c.deadFrac > 0 {
			name += "/aux"
		}
		b.Run(name, func(b *testing.B) {
			const batch = 4096
			cfg := DefaultTrainConfig(c.arch, c.dIn, c.dSAE, 32)
			cfg.BatchSize, cfg.Steps, cfg.LogEvery = batch, 1<<30, 0
			cfg.L1Coefficient = 5
			tr, err := NewTrainer(cfg)
			if err != nil {
				b.Fatal(err)
			}
			for j := 0; j < int(c.deadFrac*float64(c.dSAE)); j++ {
				tr.sinceFired[j] = 1 << 20
			}
			src := newFixedSource(c.dIn, batch)
			// One warm-up step sizes the buffers.
			tr.cfg.Steps = 1
			if _, err := tr.Run(context.Background(), src); err != nil {
				b.Fatal(err)
			}
			if c.deadFrac > 0 {
				for j := 0; j < int(c.deadFrac*float64(c.dSAE)); j++ {
					tr.sinceFired[j] = 1 << 20
				}
			}
			b.ResetTimer()
			cpu0 := cpuSeconds()
			tr.cfg.Steps = 1 + b.N
			if _, err := tr.Run(context.Background(), src); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "tokens/s")
			// CPU time per step is what a shared machine's load does not
			// inflate (as much as wall time).
			b.ReportMetric((cpuSeconds()-cpu0)/float64(b.N), "cpu-s/step")
		})
	}
}
