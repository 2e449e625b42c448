package kernels

import (
	"fmt"
	"math"
)

// Dot returns Σ x[i]·y[i] over len(x) elements; y must be at least as long.
func Dot(x, y []float32) float32 {
	y = y[:len(x)]
	n := len(x)
	if n >= 64 {
		// dotTile reads four rows of b ldb apart; with ldb = 0 all four
		// are y, and entry 0 of the result is the dot product.
		return defaultKernels.dotTile(1, x, 0, y, 0, n)[0]
	}
	return dotGo(x, y)
}

// Axpy computes y[i] += alpha·x[i] over len(x) elements; y must be at least
// as long. (The SAE decoder's sparse path: x̂ += z_f·W_dec[f] for each active f.)
func Axpy(alpha float32, x, y []float32) {
	defaultKernels.axpy(alpha, x, y[:len(x)])
}

// AddBiasGELU sets x[r][j] = gelu(x[r][j] + bias[j]) for x [rows×cols], with
// GPT-2's tanh approximation gelu(v) = 0.5·v·(1 + tanh(√(2/π)·(v + 0.044715·v³))).
// Call it on the c_fc output (MatMul with accumulate=false, then this) so the
// bias add and the activation share one pass over memory. The pre-activation
// hook (mlp.hook_pre) wants x + bias before the GELU: use AddBias then GELU
// when that hook is live.
func AddBiasGELU(x, bias []float32, rows, cols int) {
	checkRows("AddBiasGELU", x, rows, cols)
	bias = bias[:cols]
	for r := 0; r < rows; r++ {
		defaultKernels.biasGELU(x[r*cols:][:cols], bias)
	}
}

// GELU applies GPT-2's tanh-approximation GELU to x in place.
func GELU(x []float32) {
	for len(x) > 0 {
		n := min(len(x), len(zeros))
		defaultKernels.biasGELU(x[:n], zeros[:n])
		x = x[n:]
	}
}

// zeros is the bias of GELU; never written.
var zeros [1024]float32

// AddBias sets x[r][j] += bias[j] for x [rows×cols] (every Conv1D bias).
func AddBias(x, bias []float32, rows, cols int) {
	checkRows("AddBias", x, rows, cols)
	bias = bias[:cols]
	for r := 0; r < rows; r++ {
		defaultKernels.axpy(1, bias, x[r*cols:][:cols])
	}
}

// gelu uses 0.5·(1 + tanh(u)) = 1/(1 + e^(-2u)), so one exp serves.
func gelu(v float32) float32 {
	const sqrt2OverPi = 0.7978845608028654
	u := sqrt2OverPi * (v + 0.044715*v*v*v)
	return v / (1 + exp32(-2*u))
}

// exp32 is e^x in float32 to about one ulp (Cephes expf: range reduction by
// ln 2 split in two parts, then a degree-6 polynomial). It saturates to +Inf
// above 88.72 and to 0 below -103.
func exp32(x float32) float32 {
	const (
		log2e = 1.44269504088896341
		c1    = 0.693359375
		c2    = -2.12194440e-4
	)
	switch {
	case x != x:
		return x
	case x > 88.72283:
		return float32(math.Inf(1))
	case x < -103.27893:
		return 0
	}
	n := float32(math.Floor(float64(x*log2e + 0.5)))
	r := x - n*c1 - n*c2
	p := ((((1.9875691500e-4*r+1.3981999507e-3)*r+8.3334519073e-3)*r+
		4.1665795894e-2)*r+1.6666665459e-1)*r + 5.0000001201e-1
	p = p*r*r + r + 1
	// Scale by 2^n in two steps so that n down to -149 (subnormal results)
	// and up to 128 stay representable.
	ni := int32(n)
	if ni < -126 {
		p *= math.Float32frombits(uint32(ni+126+127) << 23)
		ni = -126
	}
	if ni > 127 {
		p *= 2
		ni--
	}
	return p * math.Float32frombits(uint32(ni+127)<<23)
}

// LayerNorm sets out[r] = (x[r] - mean)/sqrt(var + eps)·gamma + beta for each
// row of x [rows×cols] (biased variance, as torch.nn.LayerNorm). out may be x.
// When mean and rstd are non-nil they receive each row's mean and
// 1/sqrt(var+eps): TransformerLens's ln.hook_scale is 1/rstd, and the
// backward pass needs both. gamma and beta may be nil (LayerNormPre, after
// folding), meaning 1 and 0.
func LayerNorm(out, x, gamma, beta []float32, rows, cols int, eps float32, mean, rstd []float32) {
	checkRows("LayerNorm", x, rows, cols)
	checkRows("LayerNorm", out, rows, cols)
	if cols == 0 {
		return
	}
	ks := defaultKernels
	for r := 0; r < rows; r++ {
		row := x[r*cols:][:cols]
		mu, sq := ks.meanSqDev(row)
		rs := 1 / math.Sqrt(sq/float64(cols)+float64(eps))
		if mean != nil {
			mean[r] = float32(mu)
		}
		if rstd != nil {
			rstd[r] = float32(rs)
		}
		ks.normalize(out[r*cols:][:cols], row, gamma, beta, float32(mu), float32(rs))
	}
}

// SoftmaxRows replaces each row of x [rows×cols] by its softmax.
func SoftmaxRows(x []float32, rows, cols int) {
	CausalSoftmaxRows(x, rows, cols, cols)
}

// CausalSoftmaxRows replaces row r of x [rows×cols] by the softmax of its
// first min(past+r+1, cols) entries and zeroes the rest: the attention
// pattern of a causal mask, where past is the number of key positions before
// the first query (0 for a plain forward pass, so row r sees keys 0..r).
// SoftmaxRows is the case past ≥ cols.
func CausalSoftmaxRows(x []float32, rows, cols, past int) {
	checkRows("CausalSoftmaxRows", x, rows, cols)
	for r := 0; r < rows; r++ {
		row := x[r*cols:][:cols]
		live := row[:min(max(past+r+1, 0), cols)]
		clear(row[len(live):])
		if len(live) == 0 {
			continue
		}
		ks := defaultKernels
		s := ks.expShiftSum(live, ks.max(live))
		ks.scale(live, 1/s)
	}
}

func checkRows(op string, x []float32, rows, cols int) {
	if rows < 0 || cols < 0 || len(x) < rows*cols {
		panic(fmt.Sprintf("kernels: %s: rows=%d cols=%d needs len>=%d, have %d", op, rows, cols, rows*cols, len(x)))
	}
}
