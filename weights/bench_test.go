package weights

import (
	"runtime"
	"testing"
)

// BenchmarkOpenGPT2Small opens a GPT-2-small-shaped F32 checkpoint laid out
// like openai-community/gpt2 (124.4M parameters plus the 12 causal-mask
// buffers, ~548 MB) and gets every parameter as float32. The file is written
// once, outside the timer, and stays in the page cache, so this measures
// mapping and header validation, not disk reads. Target: < 50 ms.
//
//	go test ./weights -run '^$' -bench OpenGPT2Small -benchtime 20x
func BenchmarkOpenGPT2Small(b *testing.B) {
	cfg := DefaultConfig()
	specs := cfg.ParamSpecs()
	largest := 0
	for _, s := range specs {
		largest = max(largest, s.Shape[0]*s.Shape[len(s.Shape)-1])
	}
	// One pattern buffer backs every tensor, so that writing ~0.5 GB needs
	// one 154 MB allocation and no per-float conversion.
	pattern := make([]float32, largest)
	for i := range pattern {
		pattern[i] = float32(i%1000) * 1e-3
	}
	params := make([]Tensor, len(specs))
	for i, s := range specs {
		n := 1
		for _, d := range s.Shape {
			n *= d
		}
		params[i] = Tensor{Name: s.Name, Shape: s.Shape, Data: pattern[:n]}
	}
	dir := b.TempDir()
	if err := SaveCheckpoint(dir, cfg, params, SaveOptions{AttnBiasBuffers: true}); err != nil {
		b.Fatal(err)
	}
	pattern, params = nil, nil

	// Check once, untimed, that nothing was copied: the Go heap must not grow
	// by anything like the 498 MB of parameters.
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	c, err := OpenCheckpoint(dir)
	if err != nil {
		b.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	for name, p := range c.Params {
		if !inMapping(c.files[0], p.Data) {
			b.Fatalf("%s was copied", name)
		}
	}
	allocated := after.TotalAlloc - before.TotalAlloc
	if allocated > 16<<20 {
		b.Fatalf("OpenCheckpoint allocated %d bytes; the parameters were copied", allocated)
	}
	c.Close()

	b.Run("open", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			c, err := OpenCheckpoint(dir)
			if err != nil {
				b.Fatal(err)
			}
			n := 0
			for _, s := range specs {
				n += len(c.Params[s.Name].Data)
			}
			if n != 124439808 {
				b.Fatalf("%d parameters", n)
			}
			c.Close()
		}
		b.ReportMetric(float64(b.Elapsed().Microseconds())/1e3/float64(b.N), "ms/op")
	})
	// Reading every value once shows what the first forward pass pays to
	// fault the mapped pages in (from the page cache; from disk is slower).
	b.Run("open+sum", func(b *testing.B) {
		for b.Loop() {
			c, err := OpenCheckpoint(dir)
			if err != nil {
				b.Fatal(err)
			}
			var sum float32
			for _, p := range c.Params {
				for _, v := range p.Data {
					sum += v
				}
			}
			if sum == 0 {
				b.Fatal("all zeros")
			}
			c.Close()
		}
		b.ReportMetric(float64(b.Elapsed().Microseconds())/1e3/float64(b.N), "ms/op")
	})
}
