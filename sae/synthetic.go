package sae

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/factlens/factlens/gpt2/kernels"
)

// SyntheticSource generates activations with a known sparse structure, for
// testing that training recovers it: NFeatures random unit directions in
// DIn dimensions, of which each row is a sum of exactly Active distinct ones
// with magnitudes uniform in [MinMag, MaxMag]. Row r of the stream depends
// only on the seed and r, so the source is exactly resumable.
type SyntheticSource struct {
	Features       []float32 // [NFeatures, DIn], unit rows
	NFeatures      int
	Active         int
	MinMag, MaxMag float64
	seed           uint64
	dIn            int
	row            int64
}

// NewSyntheticSource draws the feature directions from seed.
func NewSyntheticSource(dIn, nFeatures, active int, seed uint64) (*SyntheticSource, error) {
	if dIn <= 0 || nFeatures <= 0 || active <= 0 || active > nFeatures {
		return nil, fmt.Errorf("sae: synthetic source: need d_in, features > 0 and 0 < active ≤ features (got %d, %d, %d)", dIn, nFeatures, active)
	}
	rng := rand.New(rand.NewPCG(seed, 0xfea7))
	f := make([]float32, nFeatures*dIn)
	for j := 0; j < nFeatures; j++ {
		row := f[j*dIn : (j+1)*dIn]
		var ss float64
		for i := range row {
			v := rng.NormFloat64()
			row[i] = float32(v)
			ss += v * v
		}
		inv := float32(1 / math.Sqrt(ss))
		for i := range row {
			row[i] *= inv
		}
	}
	return &SyntheticSource{Features: f, NFeatures: nFeatures, Active: active, MinMag: 0.5, MaxMag: 1.5, seed: seed, dIn: dIn}, nil
}

// DIn implements Source.
func (s *SyntheticSource) DIn() int { return s.dIn }

// Next implements Source.
func (s *SyntheticSource) Next(ctx context.Context, dst []float32) error {
	if len(dst)%s.dIn != 0 {
		return fmt.Errorf("sae: synthetic source: %d values is not a whole number of rows of %d", len(dst), s.dIn)
	}
	n := len(dst) / s.dIn
	first := s.row
	parallelRows(n, func(lo, hi int) {
		chosen := make([]int, 0, s.Active)
		for r := lo; r < hi; r++ {
			rng := rand.New(rand.NewPCG(s.seed, uint64(first)+uint64(r)))
			out := dst[r*s.dIn : (r+1)*s.dIn]
			clear(out)
			chosen = chosen[:0]
			for len(chosen) < s.Active {
				j := rng.IntN(s.NFeatures)
				dup := false
				for _, c := range chosen {
					dup = dup || c == j
				}
				if dup {
					continue
				}
				chosen = append(chosen, j)
				mag := float32(s.MinMag + (s.MaxMag-s.MinMag)*rng.Float64())
				kernels.Axpy(mag, s.Features[j*s.dIn:(j+1)*s.dIn], out)
			}
		}
	})
	s.row += int64(n)
	return ctx.Err()
}

// MarshalState implements StatefulSource.
func (s *SyntheticSource) MarshalState() ([]byte, error) { return json.Marshal(s.row) }

// UnmarshalState implements StatefulSource.
func (s *SyntheticSource) UnmarshalState(b []byte) error { return json.Unmarshal(b, &s.row) }

// Recovery reports, for every ground-truth feature, the best cosine
// similarity with any decoder row of s, and the fraction above threshold.
func (src *SyntheticSource) Recovery(s *SAE, threshold float64) (best []float64, fraction float64) {
	d := src.dIn
	norms := make([]float32, s.Config.DSAE)
	rowNorms(norms, s.WDec, s.Config.DSAE, d)
	best = make([]float64, src.NFeatures)
	parallelRows(src.NFeatures, func(lo, hi int) {
		for f := lo; f < hi; f++ {
			gt := src.Features[f*d : (f+1)*d]
			b := -1.0
			for j := 0; j < s.Config.DSAE; j++ {
				if norms[j] == 0 {
					continue
				}
				c := float64(kernels.Dot(gt, s.WDec[j*d:(j+1)*d]) / norms[j])
				b = math.Max(b, c)
			}
			best[f] = b
		}
	})
	n := 0
	for _, b := range best {
		if b > threshold {
			n++
		}
	}
	return best, float64(n) / float64(src.NFeatures)
}
