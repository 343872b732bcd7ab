//! VXLAN encapsulation and decapsulation (RFC 7348).
