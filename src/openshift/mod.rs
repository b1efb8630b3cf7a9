//! What an OpenShift install consumes: manifests for the pools ([`manifests`]), the
//! install-config pieces ([`installconfig`]) and the whole install directory at whatever
//! stage it is in ([`installkit`]).

pub(crate) mod installconfig;
pub(crate) mod installkit;
pub mod manifests;
