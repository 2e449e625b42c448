package sae

// jumpReLURow applies SAELens' JumpReLU in place: ReLU(pre)·[pre > threshold].
// Only inference is implemented; SAELens trains JumpReLU with straight-through
// estimators on log_threshold, which this package does not.
func jumpReLURow(row, threshold []float32) {
	for j, v := range row {
		if !(v > threshold[j]) || v < 0 {
			row[j] = 0
		}
	}
}
