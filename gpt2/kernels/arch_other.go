//go:build purego || !amd64

package kernels

var defaultKernels = newGoKernels()

// kernelFamilies lists every family this build can run here, best first.
func kernelFamilies() []*kernelSet { return []*kernelSet{defaultKernels} }
