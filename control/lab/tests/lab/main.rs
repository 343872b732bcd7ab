//! `kxdp-lab` (`kxdp_lab`: its manifests, topology and probe tool, the whole lab up, checked
//! and down), its pod sandbox (`pause`) and what its checks once caught (`tuple_clash`), in
//! one binary.

mod kxdp_lab;
mod pause;
mod tuple_clash;
