// Package nets holds Stable Diffusion's networks written once against
// gpu.Device: the CLIP text encoder, the U-Net and the KL autoencoder (and
// the adapters that plug into them: the CLIP vision encoder and
// IP-Adapter's projection and decoupled cross-attention), each built from
// a diffusers-style config and a set of named weights.
package nets
