package kernels

// The portable kernel family: the same blocking as the assembly ones with a
// register tile small enough for the Go compiler to keep mostly in registers.
const (
	goMR = 4
	goNR = 16
)

func newGoKernels() *kernelSet {
	return &kernelSet{
		name: "go", mr: goMR, nr: goNR, kc: 256, nc: 512,
		micro:       microGo,
		dotTile:     dotTileGo,
		gemvMaxRows: 4,
		axpy:        axpyGo,
		elementwise: goElementwise,
	}
}

var goElementwise = elementwise{biasGELU: biasGELUGo, expShiftSum: expShiftSumGo, scale: scaleGo, max: maxGo,
	meanSqDev: meanSqDevGo, normalize: normalizeGo}

// meanSqDevGo sums in float64 with four chains so the adds are not
// latency-bound; two passes avoid the cancellation of E[x²]-E[x]².
func meanSqDevGo(x []float32) (mean, sqDev float64) {
	if len(x) == 0 {
		return 0, 0
	}
	mean = sum64(x) / float64(len(x))
	var ss [4]float64
	j := 0
	for ; j+4 <= len(x); j += 4 {
		d0, d1 := float64(x[j])-mean, float64(x[j+1])-mean
		d2, d3 := float64(x[j+2])-mean, float64(x[j+3])-mean
		ss[0] += d0 * d0
		ss[1] += d1 * d1
		ss[2] += d2 * d2
		ss[3] += d3 * d3
	}
	for ; j < len(x); j++ {
		d := float64(x[j]) - mean
		ss[0] += d * d
	}
	return mean, (ss[0] + ss[1]) + (ss[2] + ss[3])
}

func sum64(x []float32) float64 {
	var s [4]float64
	i := 0
	for ; i+4 <= len(x); i += 4 {
		s[0] += float64(x[i])
		s[1] += float64(x[i+1])
		s[2] += float64(x[i+2])
		s[3] += float64(x[i+3])
	}
	for ; i < len(x); i++ {
		s[0] += float64(x[i])
	}
	return (s[0] + s[1]) + (s[2] + s[3])
}

func normalizeGo(out, x, g, b []float32, mean, rs float32) {
	out = out[:len(x)]
	switch {
	case g != nil && b != nil:
		g, b = g[:len(x)], b[:len(x)]
		for j, v := range x {
			out[j] = (v-mean)*rs*g[j] + b[j]
		}
	case g != nil:
		g = g[:len(x)]
		for j, v := range x {
			out[j] = (v - mean) * rs * g[j]
		}
	case b != nil:
		b = b[:len(x)]
		for j, v := range x {
			out[j] = (v-mean)*rs + b[j]
		}
	default:
		for j, v := range x {
			out[j] = (v - mean) * rs
		}
	}
}

func biasGELUGo(x, bias []float32) {
	bias = bias[:len(x)]
	for i, v := range x {
		x[i] = gelu(v + bias[i])
	}
}

func expShiftSumGo(x []float32, shift float32) float32 {
	var s float32
	for i, v := range x {
		e := exp32(v - shift)
		x[i] = e
		s += e
	}
	return s
}

func scaleGo(x []float32, alpha float32) {
	for i := range x {
		x[i] *= alpha
	}
}

// maxGo returns the largest element of a non-empty x.
func maxGo(x []float32) float32 {
	m := x[0]
	for _, v := range x[1:] {
		m = max(m, v)
	}
	return m
}

func microGo(rows, k int, a []float32, astride int, b []float32, bstride int, c []float32, ldc int, load bool) {
	var acc [goMR * goNR]float32
	for p := 0; p < k; p++ {
		bp := b[p*bstride:][:goNR]
		ap := a[p*astride:][:rows]
		for r, av := range ap {
			accr := acc[r*goNR:][:goNR]
			for j, bv := range bp {
				accr[j] += av * bv
			}
		}
	}
	for r := 0; r < rows; r++ {
		dst := c[r*ldc:][:goNR]
		src := acc[r*goNR:][:goNR]
		if load {
			for j, v := range src {
				dst[j] += v
			}
		} else {
			copy(dst, src)
		}
	}
}

func dotTileGo(rows int, a []float32, lda int, b []float32, ldb, k int) [16]float32 {
	var out [16]float32
	for r := 0; r < rows; r++ {
		s := dot4Go(a[r*lda:], b, ldb, k)
		copy(out[4*r:], s[:])
	}
	return out
}

func dot4Go(a, b []float32, ldb, k int) [4]float32 {
	a = a[:k]
	b0, b1, b2, b3 := b[:k], b[ldb:][:k], b[2*ldb:][:k], b[3*ldb:][:k]
	var s0, s1, s2, s3 float32
	for p, av := range a {
		s0 += av * b0[p]
		s1 += av * b1[p]
		s2 += av * b2[p]
		s3 += av * b3[p]
	}
	return [4]float32{s0, s1, s2, s3}
}

func dotGo(x, y []float32) float32 {
	y = y[:len(x)]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= len(x); i += 4 {
		s0 += x[i] * y[i]
		s1 += x[i+1] * y[i+1]
		s2 += x[i+2] * y[i+2]
		s3 += x[i+3] * y[i+3]
	}
	for ; i < len(x); i++ {
		s0 += x[i] * y[i]
	}
	return (s0 + s1) + (s2 + s3)
}

func axpyGo(alpha float32, x, y []float32) {
	y = y[:len(x)]
	for i, v := range x {
		y[i] += alpha * v
	}
}
