//! Support for layerboot's own tests, the example demo and the benchmarks: fixture
//! builders (from Debian packages), a recipe-hash keyed cache, and local services.
//! Not part of the user-facing CLI; compiled into the library so integration tests,
//! `qemu-tests/` and the `layerboot-testkit` binary share one implementation.

pub mod bootdisk;
pub mod bootupd_image;
pub mod cache;
pub mod initramfs;
pub mod kernel;
pub mod layered_image;
pub mod liveiso;
pub mod ostree_image;
pub mod registry;
