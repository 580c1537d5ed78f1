// Package sampler turns a denoising network into images' latents one step at
// a time: noise schedules (betas, sigmas, timestep spacings, Karras and
// friends), classifier-free guidance, the k-diffusion / diffusers samplers
// written as short step functions over a denoiser D(x, sigma) -> x0, and Run,
// which steps, snapshots, restores and branches a sampling run so the studio
// can pause, scrub and fork. Every diffusers scheduler it names reproduces
// diffusers' timesteps, sigmas, model inputs and trajectory (see the tests
// against ../shared/golden).
package sampler
