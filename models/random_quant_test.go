package models

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/stepwise/stepwise/gpu"
	"github.com/stepwise/stepwise/gpu/ref"
	"github.com/stepwise/stepwise/models/nets"
)

// Random weights made directly as blocks dequantize (by gpu/ref) to mean 0
// and the asked standard deviation, in every format.
func TestRandomQuantizedStats(t *testing.T) {
	const n, sigma = 1 << 16, 0.05
	for _, dt := range []gpu.DType{gpu.F16, gpu.Q8_0, gpu.Q4_0, gpu.Q4_K, gpu.Q5_K, gpu.F8E4M3, gpu.F8E5M2} {
		raw := RandomQuantized(dt, n, sigma, rand.New(rand.NewPCG(1, 2)))
		v, err := ref.Dequantize(dt, raw, n)
		require.NoError(t, err, "%v", dt)
		var s, ss float64
		for _, x := range v {
			s += float64(x)
			ss += float64(x) * float64(x)
		}
		mean := s / n
		std := math.Sqrt(ss/n - mean*mean)
		assert.InDelta(t, 0, mean, 0.01*sigma*10, "%v mean", dt)
		assert.InEpsilon(t, sigma, std, 0.06, "%v std", dt)
	}
}

// The lazy weights give the same bytes on every call, in the asked type
// for linear weights only.
func TestRandomLazy(t *testing.T) {
	w := newRandomLazy(map[string][]int{"a.weight": {8, 256}, "a.bias": {8}, "conv.weight": {4, 3, 3, 3}, "odd.weight": {2, 100}}, 7, gpu.Q4_K)
	p1, ok := w.Get("a.weight")
	require.True(t, ok)
	p2, _ := w.Get("a.weight")
	assert.Equal(t, gpu.Q4_K, p1.DType)
	assert.Equal(t, p1.Raw, p2.Raw)
	for name, dt := range map[string]gpu.DType{"a.bias": gpu.F16, "conv.weight": gpu.F16, "odd.weight": gpu.F16} {
		p, ok := w.Get(name)
		require.True(t, ok)
		assert.Equal(t, dt, p.DType, name)
		assert.Len(t, p.Raw, dt.Bytes(gpu.Shape(p.Shape).Numel()), name)
	}
	_, ok = w.Get("missing")
	assert.False(t, ok)
	var _ nets.Weights = w
}
