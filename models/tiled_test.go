package models

import (
	"github.com/stepwise/stepwise/internal/golden"
	"github.com/stepwise/stepwise/internal/testdev"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDecodeTiles checks the tiling, blending and assembly of the tiled VAE
// decode with a decoder that ignores where a tile is (nearest upsampling
// of the first three latent channels): the tiled image must equal the
// untiled one, for sizes that are and are not a whole number of tiles.
func TestDecodeTiles(t *testing.T) {
	const ds = 8
	upsample := func(z []float32, s [4]int) ([]float32, error) {
		b, c, h, w := s[0], s[1], s[2], s[3]
		out := make([]float32, b*3*h*ds*w*ds)
		for n := 0; n < b; n++ {
			for k := 0; k < 3; k++ {
				for y := 0; y < h*ds; y++ {
					for x := 0; x < w*ds; x++ {
						out[((n*3+k)*h*ds+y)*w*ds+x] = z[((n*c+k)*h+y/ds)*w+x/ds]
					}
				}
			}
		}
		return out, nil
	}
	for _, s := range [][4]int{{1, 4, 128, 128}, {2, 4, 72, 100}, {1, 4, 16, 40}} {
		lat := make([]float32, s[0]*s[1]*s[2]*s[3])
		for i := range lat {
			lat[i] = float32((i*7919)%101) / 101
		}
		want, _ := upsample(lat, s)
		got, shape, err := decodeTiles(lat, s, ds, 16, upsample)
		require.NoError(t, err)
		require.Equal(t, []int{s[0], 3, s[2] * ds, s[3] * ds}, []int(shape))
		require.Len(t, got, len(want))
		worst := 0.0
		for i := range got {
			worst = max(worst, float64(abs32(got[i]-want[i])))
		}
		assert.InDeltaf(t, 0, worst, 1e-6, "%v: tiled differs from untiled by %g (bound 1e-6: blending equal tiles only rounds)", s, worst)
	}
}

func abs32(v float32) float32 {
	if v < 0 {
		return -v
	}
	return v
}

// TestTiledDecodeOnDevices: when the decoder's largest activation exceeds
// the device's tensor limit (forced small here), Decode goes through tiles
// on both devices: the whole image comes back, finite, and close to the
// untiled decode away from nothing in particular (the VAE's attention is
// global, so tiles differ everywhere a little).
func TestTiledDecodeOnDevices(t *testing.T) {
	for devName, open := range testdev.All(t) {
		d := open(t)
		p, err := Load(d, golden.Path(t, "sd15-mini"), "")
		require.NoError(t, err)
		shape := [4]int{1, 4, 16, 24}
		lat := make([]float32, 4*16*24)
		for i := range lat {
			lat[i] = float32((i*31)%17)/17 - 0.5
		}
		whole, err := p.Decode(lat, shape)
		require.NoError(t, err)
		p.tileLimit = p.decodePeakBytes([4]int{1, 4, 8, 8}) // tiles of 8 latents
		tiled, err := p.Decode(lat, shape)
		require.NoError(t, err, devName)
		require.Equal(t, whole[0].Bounds(), tiled[0].Bounds())
		diff := 0
		for i := range whole[0].Pix {
			if d := int(whole[0].Pix[i]) - int(tiled[0].Pix[i]); d > 64 || d < -64 {
				diff++
			}
		}
		assert.Lessf(t, diff, len(whole[0].Pix)/4, "%s: %d of %d values differ by more than 64 levels", devName, diff, len(whole[0].Pix))
		p.Close()
	}
}
