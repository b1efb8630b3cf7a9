//! layerboot: from a pre-built CoreOS / RHCOS layered image to install-time manifests,
//! Ignition, live ISOs and first-boot disk images, proven in QEMU.
//!
//! Module map (one concern each):
//! - [`oci`]: image references (registry, `oci:`, `oci-archive:`), manifests, OCI layouts
//!   and archives with verified content-addressed blobs.
//! - [`cmd`]: the single subprocess helper.
//! - [`io`]: atomic output files and streaming adapters (hashing, progress).
//! - [`iso`]: customize / show / reset CoreOS live ISOs (coreos-installer compatible).
//! - [`qemu`]: the QEMU command-line builder, accelerator probe, OVMF lookup, process owner.
//! - [`boottest`]: boot an artifact in QEMU and decide pass/fail from its output.
//! - [`bootimage`]: boot image definitions (`bootimages/*.toml`) resolved into disk layout plans.
//! - [`disk`]: the disk image builder (deploy, bootloader, filesystems, GPT, artifact, stream metadata).
//! - [`registry`]: registry access (auth files, TLS, retries), `resolve` to a pinned digest,
//!   `pull` into a local layout.
//! - [`image`]: the one rule for what an image is (bootable, version, pinning), and
//!   `inspect`'s report of it.
//! - [`openshift`]: install-time manifests, install-config pieces, the install kit.
//! - [`output`]: everything printed to stdout/stderr (a closed or full stdout never panics).
//! - [`cli`]: the clap tree and dispatch; each subcommand resolves raw args into settings.

// Printing goes through `output` (print!/eprintln! panic on a closed or full stream).
#![warn(clippy::print_stdout, clippy::print_stderr)]

pub mod bootimage;
pub mod boottest;
pub(crate) mod cacert;
pub mod cancel;
pub mod cli;
pub mod cmd;
pub mod disk;
#[doc(hidden)]
pub mod fuzz_api;
pub mod ignition;
pub(crate) mod image;
pub mod io;
pub(crate) mod iso;
pub mod oci;
pub mod openshift;
pub mod output;
pub mod qemu;
pub mod registry;
pub(crate) mod stream;
#[doc(hidden)]
pub(crate) mod units;
