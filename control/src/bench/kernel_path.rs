//! The kernel baseline kxdp is compared against: kube-proxy's rules and Flannel's VXLAN,
//! configured into a node's network namespace.
