package ref

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/stepwise/stepwise/gpu"
)

// TestGuessMatMul: the placeholder of a MatMul that did not run (after an
// error or an interrupt) has the product's shape, its leading dims from the
// batched operand (a weight times a batch of tokens), so that a view of it
// records no second error over the first.
func TestGuessMatMul(t *testing.T) {
	d := New()
	defer d.Close()
	w := d.Upload(make([]float32, 6), 3, 2)
	x := d.Upload(make([]float32, 20), 2, 5, 2)
	assert.Equal(t, gpu.Shape{2, 3, 5}, guessMatMul(w, x, gpu.MatMulOpts{TransB: true}))
	assert.Equal(t, gpu.Shape{2, 5, 3}, guessMatMul(x, w, gpu.MatMulOpts{TransB: true}))
	y := d.Upload(make([]float32, 20), 2, 2, 5)
	assert.Equal(t, gpu.Shape{2, 5, 3}, guessMatMul(y, w, gpu.MatMulOpts{TransA: true, TransB: true}))
}
