//! The QEMU test suite (`cargo test --test qemu`): boots real artifacts under TCG (or KVM
//! where it works). Each issue adds a module. Fixtures are built from Debian packages on
//! first use and cached by recipe hash (see `layerboot_testkit::cache`).

mod boottest;
mod common;
mod coreos_installer;
mod disk;
mod iso;
mod live;
mod platforms;
mod selinux;
