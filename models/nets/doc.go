// Package nets holds Stable Diffusion's networks written once against
// gpu.Device: the CLIP and T5 text encoders, the U-Net, SD3's MM-DiT and
// the KL autoencoder, each built from a diffusers-style config and a set of
// named weights.
package nets
