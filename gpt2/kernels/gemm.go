package kernels

import (
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"
)

// microFunc multiplies an A micro-panel (rows ≤ MR floats per k step, steps
// astride floats apart) by a B panel NR floats wide (k rows bstride floats
// apart) and stores the rows×NR product into c (row stride ldc), adding to
// what c holds when load is true. k ≥ 1.
type microFunc func(rows, k int, a []float32, astride int, b []float32, bstride int, c []float32, ldc int, load bool)

// kernelSet is one micro-kernel family with the blocking that suits it.
type kernelSet struct {
	name   string
	mr, nr int // register tile
	kc     int // depth of a packed block: A micro-panel mr×kc stays in L1
	nc     int // width of a packed B block: kc×nc stays in L2
	micro  microFunc
	// transpose8 packs eight rows at once (see gen.go); nil when the
	// family has no vector transpose, and packing falls back to scalar code.
	transpose8 func(dst []float32, dstStride int, src []float32, srcStride, nblocks int)
	// dotTile returns out[4r+j] = a[r*lda:][:k]·b[j*ldb:][:k] for r < rows ≤ 4, j < 4.
	dotTile func(rows int, a []float32, lda int, b []float32, ldb, k int) [16]float32
	// gemvMaxRows is the largest m for which A·Bᵀ runs as dot products
	// (dotTile over b's rows in place) rather than packed GEMM.
	gemvMaxRows int
	// axpy computes y += alpha·x.
	axpy func(alpha float32, x, y []float32)
	elementwise
	pool sync.Pool // *scratch sized for this family
}

// elementwise holds the vector loops of ops.go.
type elementwise struct {
	biasGELU    func(x, bias []float32)                  // x[i] = gelu(x[i]+bias[i])
	expShiftSum func(x []float32, shift float32) float32 // x[i] = e^(x[i]-shift); returns Σ
	scale       func(x []float32, alpha float32)         // x[i] *= alpha
	max         func(x []float32) float32                // max of non-empty x
	// meanSqDev returns the mean of x and Σ(x-mean)² (two passes).
	meanSqDev func(x []float32) (mean, sqDev float64)
	// normalize sets out = (x-mean)·rs·g + b; g and b may be nil (1 and 0).
	normalize func(out, x, g, b []float32, mean, rs float32)
}

// scratch holds one goroutine's packing buffers, 64-byte aligned.
type scratch struct {
	a   []float32 // mr×kc A micro-panel
	b   []float32 // kc×nc B block as nr-wide panels
	tmp []float32 // mr×nr tile for the ragged right edge of C
}

func (ks *kernelSet) getScratch() *scratch {
	if s, ok := ks.pool.Get().(*scratch); ok {
		return s
	}
	ncRounded := (ks.nc + ks.nr - 1) / ks.nr * ks.nr
	return &scratch{
		a:   alignedFloats(ks.mr * ks.kc),
		b:   alignedFloats(ks.kc * ncRounded),
		tmp: alignedFloats(ks.mr * ks.nr),
	}
}

// alignedFloats returns n zeroed floats starting on a 64-byte (cache line,
// zmm) boundary.
func alignedFloats(n int) []float32 {
	buf := make([]float32, n+16)
	off := int((64 - uintptr(unsafe.Pointer(&buf[0]))%64) % 64 / 4)
	return buf[off : off+n : off+n]
}

// Work below these sizes runs on the calling goroutine: starting a goroutine
// and splitting the packing costs more than it saves.
const minParallelFlops = 16 << 20

// gemvBlockRows rows of b (×k floats) are reused from L2 across the rows of a.
const gemvBlockRows = 64

// operands describes one product C = op(A)·op(B) with row-major storage.
type operands struct {
	c, a, b        []float32
	m, k, n        int
	lda, ldb, ldc  int
	transA, transB bool
	accumulate     bool
}

func gemm(ks *kernelSet, c, a, b []float32, m, k, n int, transA, transB, accumulate bool) {
	lda, ldb := k, n
	if transA {
		lda = m
	}
	if transB {
		ldb = k
	}
	gemmStrided(ks, &operands{c: c, a: a, b: b, m: m, k: k, n: n, lda: lda, ldb: ldb, ldc: n,
		transA: transA, transB: transB, accumulate: accumulate})
}

func gemmStrided(ks *kernelSet, op *operands) {
	m, k, n, c := op.m, op.k, op.n, op.c
	transA, transB := op.transA, op.transB
	if m == 0 || n == 0 {
		return
	}
	if k == 0 {
		if !op.accumulate {
			for i := 0; i < m; i++ {
				clear(c[i*op.ldc:][:n])
			}
		}
		return
	}
	workers := runtime.GOMAXPROCS(0)
	if 2*m*n*k < minParallelFlops {
		workers = 1
	}
	// Small-m TransB (the unembedding of a few positions) runs as dot
	// products over b's rows in place: the transposing pack of a wide b
	// costs more than the few rows of a can repay.
	if transB && m <= ks.gemvMaxRows {
		parallel(workers, n, 4, chunkUnits((n+3)/4, workers, 16, 1<<20),
			func(j0, j1 int) { ks.gemvTransB(op, j0, j1) })
		return
	}
	np := (n + ks.nr - 1) / ks.nr
	mp := (m + ks.mr - 1) / ks.mr
	if workers == 1 {
		ks.run(op, 0, m, 0, n)
		return
	}
	// Each worker packs the B columns it owns and the A rows it owns, so a
	// column split repacks all of A in every worker and a row split all of
	// B: split the dimension whose repacking is cheaper (aᵀ is read in
	// place, never packed). One static share per worker: finer chunks
	// would repack more and did not pay for their balance in measurements.
	if np >= workers && (transA || m <= n || mp < workers) {
		parallel(workers, n, ks.nr, (np+workers-1)/workers,
			func(j0, j1 int) { ks.run(op, 0, m, j0, j1) })
		return
	}
	parallel(workers, m, ks.mr, (mp+workers-1)/workers,
		func(i0, i1 int) { ks.run(op, i0, i1, 0, n) })
}

// parallel splits [0,total) into chunks of chunk units (unit-aligned) and
// runs fn on them from up to workers goroutines that take chunks in turn, so
// a worker that starts late simply takes fewer.
//
// The calling goroutine only waits: a goroutine it starts sits in its P's
// runnext slot, which idle Ps hesitate to steal, so work the caller kept for
// itself would delay the helper by as long as it runs (measured ~100µs under
// KVM, against ~10–25µs for a helper in the ordinary run queue).
func parallel(workers, total, unit, chunk int, fn func(lo, hi int)) {
	units := (total + unit - 1) / unit
	chunks := (units + chunk - 1) / chunk
	workers = min(workers, chunks)
	if workers <= 1 {
		for lo := 0; lo < units; lo += chunk {
			fn(lo*unit, min((lo+chunk)*unit, total))
		}
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	wg.Add(workers)
	for range workers {
		go func() {
			defer wg.Done()
			for {
				c := int(next.Add(1)) - 1
				if c >= chunks {
					return
				}
				fn(c*chunk*unit, min((c+1)*chunk*unit, total))
			}
		}()
	}
	wg.Wait()
}

// chunkUnits picks how many units one chunk of parallel work holds: about
// three chunks per worker, so that a late start costs little imbalance, but
// at least minUnits and at most maxUnits.
func chunkUnits(units, workers, minUnits, maxUnits int) int {
	c := (units + 3*workers - 1) / (3 * workers)
	return max(min(c, maxUnits), minUnits)
}

// run computes rows [i0,i1) × columns [j0,j1) of op.c.
func (ks *kernelSet) run(op *operands, i0, i1, j0, j1 int) {
	s := ks.getScratch()
	defer ks.pool.Put(s)
	mr, nr := ks.mr, ks.nr
	// With one or two row panels each B panel is used once or twice, so
	// packing it would mostly add a copy: read full panels of b in place
	// (the second pass finds the kc×nc block in L2). With more row panels
	// packing wins: in place, rows ldb apart alias into few L2 sets once
	// ldb is a large power-of-two multiple (n = 3072, 6144).
	directB := !op.transB && i1-i0 <= 2*mr
	ncBlock := ks.nc
	for jc := j0; jc < j1; jc += ncBlock {
		nc := min(ncBlock, j1-jc)
		for pc := 0; pc < op.k; pc += ks.kc {
			kc := min(ks.kc, op.k-pc)
			load := op.accumulate || pc > 0
			full := nc / nr * nr
			if directB {
				if full < nc {
					ks.packB(s.b, op, pc, kc, jc+full, nc-full)
				}
			} else {
				for jr := 0; jr < nc; jr += nr {
					ks.packB(s.b[jr*kc:], op, pc, kc, jc+jr, min(nr, nc-jr))
				}
			}
			for ir := i0; ir < i1; ir += mr {
				rows := min(mr, i1-ir)
				ap, astride := s.a, rows
				if op.transA {
					// aᵀ already holds rows contiguous floats per k step.
					ap, astride = op.a[pc*op.lda+ir:], op.lda
				} else {
					ks.packA(s.a, op, ir, rows, pc, kc)
				}
				for jr := 0; jr < nc; jr += nr {
					var bp []float32
					bstride := nr
					switch {
					case directB && jr < full:
						bp, bstride = op.b[pc*op.ldb+jc+jr:], op.ldb
					case directB:
						bp = s.b
					default:
						bp = s.b[jr*kc:]
					}
					ci := ir*op.ldc + jc + jr
					if jr < full {
						ks.micro(rows, kc, ap, astride, bp, bstride, op.c[ci:], op.ldc, load)
						continue
					}
					cols := nc - jr
					ks.micro(rows, kc, ap, astride, bp, bstride, s.tmp, nr, false)
					for r := 0; r < rows; r++ {
						dst := op.c[ci+r*op.ldc:][:cols]
						src := s.tmp[r*nr:][:cols]
						if load {
							for j, v := range src {
								dst[j] += v
							}
						} else {
							copy(dst, src)
						}
					}
				}
			}
		}
	}
}

// packA writes rows [i,i+rows) × depth [pc,pc+kc) of A (not transposed) into
// dst as a micro-panel: dst[p*rows+r] = a[i+r][pc+p].
func (ks *kernelSet) packA(dst []float32, op *operands, i, rows, pc, kc int) {
	dst = dst[:kc*rows]
	lda := op.lda
	p0 := 0
	if rows == 8 && ks.transpose8 != nil && kc >= 8 {
		p0 = kc &^ 7
		ks.transpose8(dst, 8, op.a[i*lda+pc:], lda, p0/8)
	}
	for r := 0; r < rows; r++ {
		src := op.a[(i+r)*lda+pc:][:kc]
		for p := p0; p < kc; p++ {
			dst[p*rows+r] = src[p]
		}
	}
}

// packB writes depth [pc,pc+kc) × columns [j,j+cols) of op(B) into dst as one
// nr-wide panel, zero-padding columns cols..nr: dst[p*nr+c] = op(B)[pc+p][j+c].
func (ks *kernelSet) packB(dst []float32, op *operands, pc, kc, j, cols int) {
	nr, ldb := ks.nr, op.ldb
	dst = dst[:kc*nr]
	if !op.transB {
		for p := 0; p < kc; p++ {
			d := dst[p*nr:][:nr]
			copy(d, op.b[(pc+p)*ldb+j:][:cols])
			clear(d[cols:])
		}
		return
	}
	// op(B)[pc+p][j+c] = b[(j+c)*ldb + pc+p]: a transpose.
	c0 := 0
	if ks.transpose8 != nil && kc >= 8 {
		p8 := kc &^ 7
		for ; c0+8 <= cols; c0 += 8 {
			ks.transpose8(dst[c0:], nr, op.b[(j+c0)*ldb+pc:], ldb, p8/8)
			for c := c0; c < c0+8; c++ {
				src := op.b[(j+c)*ldb+pc:][:kc]
				for p := p8; p < kc; p++ {
					dst[p*nr+c] = src[p]
				}
			}
		}
	}
	for c := c0; c < cols; c++ {
		src := op.b[(j+c)*ldb+pc:][:kc]
		for p, v := range src {
			dst[p*nr+c] = v
		}
	}
	if cols < nr {
		for p := 0; p < kc; p++ {
			clear(dst[p*nr+cols : (p+1)*nr])
		}
	}
}

// gemvTransB computes columns [j0,j1) of C = A·Bᵀ as dot products, for small m.
func (ks *kernelSet) gemvTransB(op *operands, j0, j1 int) {
	k := op.k
	for jb := j0; jb < j1; jb += gemvBlockRows {
		je := min(jb+gemvBlockRows, j1)
		for i := 0; i < op.m; i += 4 {
			rows := min(4, op.m-i)
			ai := op.a[i*op.lda:]
			j := jb
			for ; j+4 <= je; j += 4 {
				s := ks.dotTile(rows, ai, op.lda, op.b[j*op.ldb:], op.ldb, k)
				for r := 0; r < rows; r++ {
					ci := op.c[(i+r)*op.ldc+j:][:4]
					sr := s[4*r:][:4]
					if op.accumulate {
						for q, v := range sr {
							ci[q] += v
						}
					} else {
						copy(ci, sr)
					}
				}
			}
			for ; j < je; j++ {
				bj := op.b[j*op.ldb:][:k]
				for r := 0; r < rows; r++ {
					s := dotGo(ai[r*op.lda:][:k], bj)
					if op.accumulate {
						op.c[(i+r)*op.ldc+j] += s
					} else {
						op.c[(i+r)*op.ldc+j] = s
					}
				}
			}
		}
	}
}
