//! Support for layerboot's own tests, the example demo and the benchmarks: fixture
//! builders (from Debian packages), a recipe-hash keyed cache, and local services.
//! Its own unpublished crate of the workspace, so that none of it ships with layerboot:
//! the integration tests, `qemu-tests/` and the `layerboot-testkit` binary share it.

pub mod bootdisk;
pub mod bootupd_image;
pub mod cache;
pub mod coreos_image;
pub mod http;
pub mod initramfs;
pub mod installer_guest;
pub mod kernel;
pub mod layered_image;
pub mod live_image;
pub mod liveiso;
pub mod ostree_image;
pub mod registry;
pub mod selinux_image;
pub mod sid_grub;
