// Package nets holds Stable Diffusion's networks written once against
// gpu.Device: the CLIP and T5 text encoders, the U-Net, SD3's MM-DiT, Flux's
// transformer and the KL autoencoder (and the adapters that plug into them:
// the ControlNet, the CLIP vision encoder and IP-Adapter's projection and
// decoupled cross-attention), each built from a diffusers-style config and a
// set of named weights.
package nets
